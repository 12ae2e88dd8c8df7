"""The Ray engine: the embed stream of zsclip.encode executed on a Ray cluster with Ray Data.

An executor, not a fork. The driver walks the sources exactly as the local engine does (zsclip.sources.walk) and
looks files up in the image-embedding store; the rest go to Ray Data, where CPU tasks read the bytes (local
paths, or s3:// gs:// abfs:// URIs through pyarrow's file systems), hash them and decode them with
zsclip.images.decode_image and the same limits (a bad file becomes a row with its skip reason, never a failed
task), and an actor pool holding one model per actor encodes them (zsclip.encode.encode_images: bf16 autocast on
CUDA). The driver gets the rows back in walk order, stores the new vectors and yields the same EmbeddedBatch
records as the local engine, so classify, eval, prompt comparison and their writers do not know which engine ran.
Probabilities stay on the driver (zsclip.classify.probabilities on the returned embeddings): one code path for
both engines, and a vector is 512 floats where a classifier can be 21k classes.

Nothing heavy is imported at module level: the CLI imports RayOptions and check_engine at start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import sys
from collections.abc import Container, Iterator
from dataclasses import dataclass

from .errors import UsageError
from .limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS, check_limits

ENGINES = ("local", "ray")
INSTALL = 'pip install "zsclip[ray]"'
# A decode task's process: Python, torch, torchvision and PIL imported (measured peak 555 MiB with batches of 32
# at 224 px), with the 25% headroom Ray Data's memory check asks for.
DECODE_TASK_MEMORY = 700 << 20


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs (the CLI's --ray-address, --actors, --gpus-per-actor,
    --cpus-per-actor)."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local cluster started and shut down for the run
    actors: int | None = None  # model replicas; default one per GPU, else 1
    gpus_per_actor: float | None = None  # default 1 when the cluster has GPUs, else 0
    cpus_per_actor: float | None = None  # default 1
    num_cpus: int | None = None  # CPUs of a local cluster started for the run (default: all)

    def check(self) -> RayOptions:
        if self.actors is not None and self.actors < 1:
            raise UsageError(f"--actors {self.actors}: give at least 1")
        for name, value in (("--gpus-per-actor", self.gpus_per_actor), ("--cpus-per-actor", self.cpus_per_actor)):
            if value is not None and value < 0:
                raise UsageError(f"{name} {value:g}: give 0 or more")
        return self


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    return engine


# -- the driver's output: records alone on stdout -------------------------------------------------------
_CONTAINED: tuple | None = None
_CHATTER = re.compile(
    r"Token authentication is enabled|Progress bars disabled|has constructor arguments in the object store|"
    r"Started a local Ray instance|View the dashboard|Usage stats collection|^\s*$|\bINFO\b|\bDEBUG\b|"
    r"Full logs are in|To see full logs|Execution plan of Dataset|Starting execution of Dataset|execution finished|"
    r"execution failed|Exception occurred in Ray Data or Ray Core internal code|Full stack trace:"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayNoise:
    """Ray's own output, one line per event: an event line that a traceback explains is said alone, a bare
    traceback (and the chain of exceptions it may hold) by its first exception, a block of forwarded worker or
    raylet lines by its first line; repeats of one message (numbers aside) are said once, and Ray's progress
    chatter goes."""

    def __init__(self) -> None:
        self.traceback = ""  # "": not in one; "head": explained by a line said already; "bare": not yet said
        self.block: str | None = None  # the prefix of the forwarded block being read, "(raylet)" etc.
        self.said: set[str] = set()

    def feed(self, line: str) -> str | None:
        line = _ANSI.sub("", line).rstrip()
        at = line.find("Traceback (most recent call last)")
        if self.traceback:
            chained = line.startswith(("During handling", "The above exception")) or at == 0
            if not line or line[:1].isspace() or chained:
                return None
            if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line):  # an exception of the chain
                if self.traceback == "bare":
                    self.traceback = "head"
                    return self._once(line)
                return None
            self.traceback = ""
        if at >= 0:  # a traceback, alone or after the event it explains ("Task ... failed. Error: Traceback ...")
            head = re.sub(r"\s*(Error:)?\s*$", "", line[:at])
            said = self.feed(head) if head.strip() else None
            self.traceback = "head" if head.strip() else "bare"
            return said
        if _CHATTER.search(line) or line[:1].isspace():  # chatter, or the indented rest of a message
            return None
        prefix = re.match(r"^\((raylet|pid=[^)]*|[^)]*pid=[^)]*)\)", line)
        if prefix:
            if self.block == prefix.group(0):
                return None
            self.block = prefix.group(0)
            line = line[len(self.block) :].strip()
        else:
            self.block = None
        line = re.sub(r"^\[?[0-9-]+ [0-9:,]+\]?\s*(\w+ )?[\w.]+:\d+ -- ", "", line)  # Ray's log-line head
        return self._once(line)

    def _once(self, line: str) -> str | None:
        key = re.sub(r"[0-9a-f]{8,}|\d+", "#", line)
        if key in self.said:
            return None
        self.said.add(key)
        line = " ".join(line.split())
        if len(line) > 160:  # Ray's event lines run on (ids, addresses, advice): the first sentence says what
            line = line[: line.find(". ", 60) + 1] if line.find(". ", 60) > 0 else line[:300]
        return f"ray: {line}"


def contain_output():
    """Keep everything but zsclip's own records off stdout while Ray runs, process-wide and once: Ray prints
    forwarded worker lines, raylet events and tracebacks to the process's stdout and stderr (Python and C++
    alike). File descriptors 1 and 2 are pointed at a pipe that a thread reads through RayNoise onto the real
    stderr; zsclip keeps private copies of the real stdout (for records) and stderr (for its own messages).
    Returns (records, messages) text streams, or None where stdout is not the process's own (a test runner)."""
    global _CONTAINED
    if _CONTAINED is not None:
        return _CONTAINED
    try:
        if (sys.stdout.fileno(), sys.stderr.fileno()) != (1, 2):
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
    import atexit
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    out = sys.stdout
    records = os.fdopen(os.dup(1), "w", encoding=out.encoding, errors=out.errors, buffering=1 if out.line_buffering
                        else -1)  # fmt: skip
    messages = os.fdopen(os.dup(2), "w", encoding=sys.stderr.encoding, errors="backslashreplace", buffering=1)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)
    noise = RayNoise()

    def pump() -> None:
        with os.fdopen(read, "r", encoding="utf-8", errors="replace") as pipe:
            log = os.environ.get("ZSCLIP_RAY_LOG")  # everything Ray printed, unfiltered, for a bug report
            raw = open(log, "a", encoding="utf-8", errors="replace") if log else None  # noqa: SIM115
            for line in pipe:
                if raw:
                    raw.write(line)
                    raw.flush()
                said = noise.feed(line)
                if said is not None:
                    messages.write(said + "\n")
                    messages.flush()

    thread = threading.Thread(target=pump, name="zsclip-ray-output", daemon=True)
    thread.start()

    def drain() -> None:  # at exit, after Ray has shut down: what is in the pipe still gets its line
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
            os.close(1)
            os.close(2)
        thread.join(timeout=2)
        with contextlib.suppress(OSError, ValueError):
            records.flush()
            messages.flush()

    atexit.register(drain)
    _CONTAINED = (records, messages)
    return _CONTAINED


def require_ray():
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # ray without the [data] extra lacks pandas/pyarrow for it
    except ImportError:
        raise UsageError(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


@contextlib.contextmanager
def cluster(options: RayOptions) -> Iterator[None]:
    """Connect to the cluster at --ray-address or $RAY_ADDRESS, else start a local one for the run. A Ray
    already initialised by the caller (a notebook, the tests) is used as it is and left running."""
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    from . import progress

    address = options.address or os.environ.get("RAY_ADDRESS") or None
    progress.log(f"ray: connecting to {address}" if address else "ray: starting a local cluster for this run")
    # log_to_driver=False: worker output would otherwise land on our stdout, which holds the results.
    import zsclip

    package = os.path.dirname(zsclip.__file__)
    if address:  # ship the driver's zsclip to the workers, so both sides run the same decode and encode code
        kwargs = {"runtime_env": {"py_modules": [package]}}
    else:
        # Workers of a local cluster start in this process's working directory, which Ray puts on their path: a
        # folder named zsclip there (a clone's parent) would be imported as an empty namespace package. With the
        # folder holding this zsclip on their path too, the real package wins, wherever it is installed.
        path = os.pathsep.join(p for p in (os.path.dirname(package), os.environ.get("PYTHONPATH")) if p)
        kwargs = {"num_cpus": options.num_cpus, "runtime_env": {"env_vars": {"PYTHONPATH": path}}}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


# -- on the cluster ----------------------------------------------------------------------------------------
def read_file(path: str) -> tuple[bytes, int, int]:
    """(bytes, size, mtime_ns) of a local file or a URI; SkipFile with the reason when it cannot be read."""
    from .images import SkipFile, check_file
    from .sources import is_uri, uri_filesystem

    if not is_uri(path):
        check_file(path)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), st.st_size, st.st_mtime_ns
        except OSError as exc:
            raise SkipFile(exc.strerror or str(exc)) from None
    try:
        filesystem, inner = uri_filesystem(path)
        with filesystem.open_input_stream(inner) as f:
            data = f.read()
    except (OSError, UsageError) as exc:
        raise SkipFile(" ".join(str(exc).split())[:200] or type(exc).__name__) from None
    if not data:
        raise SkipFile("empty file")
    return data, len(data), 0


@dataclass
class Decode:
    """Ray Data map_batches function (CPU tasks): paths -> preprocessed pixels, or a skip reason per row."""

    preprocess: object
    shape: tuple[int, ...]
    draft: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .images import SkipFile, decode_image, time_limit

        n = len(batch["path"])
        pixels = np.zeros((n, *self.shape), dtype=np.float32)  # a skipped row keeps zeros; it is never encoded
        reasons, hashes, sizes, mtimes = [""] * n, [""] * n, np.zeros(n, np.int64), np.zeros(n, np.int64)
        for j, path in enumerate(map(os.fsdecode, batch["path"])):
            try:
                with time_limit(self.file_timeout):
                    data, sizes[j], mtimes[j] = read_file(path)
                    tensor = decode_image(io.BytesIO(data), path, self.preprocess, self.draft, self.max_pixels)
                pixels[j] = tensor.numpy()
                hashes[j] = hashlib.blake2b(data, digest_size=16).hexdigest()  # as zsclip.store.content_hash
            except SkipFile as exc:
                reasons[j] = str(exc)
        return {
            "index": batch["index"],
            "pixels": pixels,
            "reason": np.array(reasons, dtype=object),
            "content_hash": np.array(hashes, dtype=object),
            "size": sizes,
            "mtime_ns": mtimes,
        }


class Embedder:
    """Ray Data actor: one model per actor (loaded from the driver's spec, checked by fingerprint); pixels ->
    unit-norm float32 embeddings."""

    def __init__(self, spec: str, fingerprint: str, device: str, precision: str, shape: tuple[int, ...]) -> None:
        import torch

        from .encode import encode_images
        from .errors import ZsclipError
        from .models import load_model

        self.model = load_model(spec, device=device, precision=precision)
        if self.model.fingerprint != fingerprint:
            raise ZsclipError(
                f"--model {spec}: a Ray worker loaded other weights than the driver (fingerprint "
                f"{self.model.fingerprint} != {fingerprint}); give a path every node sees the same"
            )
        self.dim = int(encode_images(self.model, torch.zeros((1, *shape))).shape[-1])

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import torch

        from .encode import encode_images

        ok = np.array([not r for r in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            vectors[ok] = encode_images(self.model, pixels).cpu().numpy()
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


# -- the driver --------------------------------------------------------------------------------------------
def ray_embed_stream(
    model,
    sources: list[tuple[str, bool]],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    recursive: bool = True,
    store: bool = True,
    cache=None,
    exact: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    exclude: Container[str] = (),
    shard: tuple[int, int] | None = None,
    ray: RayOptions | None = None,
):
    """zsclip.encode.embed_stream on Ray Data: the same EmbeddedBatch records, in walk order. `workers` is
    the local engine's and is not used (Ray schedules one decode task per free CPU)."""
    import numpy as np
    import torch

    from .cache import Cache
    from .encode import EmbeddedBatch, _put, draft_size
    from .sources import has_image_extension, is_uri, looks_like_image, walk
    from .store import FileIdentity, ImageStore, variant_key

    check_limits(batch_size, workers, max_pixels, file_timeout)
    options = (ray or RayOptions()).check()
    require_ray()
    with cluster(options):
        plan = _plan(model, options)
        batch_size = batch_size or (256 if plan["device"] == "cuda" else 32)
        draft = None if exact else draft_size(model)
        variant = variant_key(plan["precision"], model.preprocess, draft)
        image_store = ImageStore.open(cache or Cache(), model.fingerprint, variant) if store else None
        entries = [
            path
            for path, explicit in walk(sources, recursive, shard, exclude)
            if (explicit or has_image_extension(path) or (not is_uri(path) and looks_like_image(path)))
        ]
        # The driver's store lookup: by the full stat identity (zsclip.identity), so the driver never reads a file;
        # what the cluster encodes is stored under the identity the driver saw, if the bytes read were of it.
        stored: dict[int, np.ndarray] = {}
        storable: dict[int, tuple] = {}
        for i, path in enumerate(entries):
            if image_store is not None and not is_uri(path):
                vector, key = _lookup(image_store, path)
                if vector is not None:
                    stored[i] = vector.copy()
                elif key is not None:
                    storable[i] = key
        # Paths travel as bytes: Arrow strings must be UTF-8, file names need not be.
        todo = [{"index": i, "path": os.fsencode(p)} for i, p in enumerate(entries) if i not in stored]
        rows = _run(model, todo, plan, batch_size, draft, max_pixels, file_timeout) if todo else iter(())
        try:
            for start in range(0, len(entries), batch_size):
                end = min(start + batch_size, len(entries))
                paths, vectors, hashes, skipped, skipped_at, fresh, encoded = [], [], [], [], [], [], []
                for i in range(start, end):
                    if i in stored:
                        paths.append(entries[i])
                        vectors.append(stored[i])
                        hashes.append(None)
                        continue
                    row = next(rows)
                    if row["index"] != i:  # rows come in walk order; anything else is a bug, not a user error
                        raise RuntimeError(f"ray engine: row {row['index']} arrived where {i} was due")
                    if row["reason"]:
                        skipped.append((entries[i], row["reason"]))
                        skipped_at.append(len(paths))
                        continue
                    encoded.append(len(paths))
                    paths.append(entries[i])
                    vectors.append(row["vector"])
                    hashes.append(row["content_hash"])
                    key = storable.get(i)
                    # Stored only if the bytes the task read are the file the driver stat'ed (same size and
                    # mtime): a file replaced meanwhile is encoded for this run but not filed under the old identity.
                    if key is not None and (key[1], key[2]) == (int(row["size"]), int(row["mtime_ns"])):
                        path_key, size, mtime, ctime, inode = key
                        fresh.append((FileIdentity(path_key, size, mtime, row["content_hash"], ctime, inode),
                                      row["vector"]))  # fmt: skip
                if image_store is not None and fresh and not _put(image_store, fresh):
                    image_store = None
                features = torch.from_numpy(np.stack(vectors)).to(model.device) if vectors else None
                reused = sum(1 for i in range(start, end) if i in stored)
                yield EmbeddedBatch(paths, features, skipped, reused, skipped_at, encoded, content_hashes=hashes)
        finally:
            close = getattr(rows, "close", None)
            if close:
                close()  # stop the Ray pipeline when the consumer stops early (--strict, an error)
            if image_store is not None:
                image_store.close()


def _failing_in_one_line(batches):
    """The batches; a run that fails on the cluster (a model actor that cannot start, a task that keeps dying) is
    one ZsclipError line naming the cause, not Ray's traceback."""
    from .errors import ZsclipError

    try:
        yield from batches
    except Exception as exc:
        if isinstance(exc, ZsclipError | RuntimeError) and not type(exc).__module__.startswith("ray"):
            raise
        raise ZsclipError(f"--engine ray: the run failed on the cluster: {_cause(exc)}") from None


def _cause(exc: BaseException) -> str:
    """The innermost error in a Ray exception, in one line: zsclip's own message where it raised one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        found = re.match(r"^zsclip\.errors\.\w+: (.*)$", line)
        if found:
            return found.group(1)
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", line)]
    return (errors[-1] if errors else lines[-1] if lines else type(exc).__name__)[:300]


def _lookup(image_store, path: str):
    import sqlite3

    try:
        return image_store.lookup_by_stat(path)
    except sqlite3.Error:  # an unreadable store costs a re-encode, never the run
        return None, None


def _plan(model, options: RayOptions) -> dict:
    """Actors, resources, device and precision, from the options and the cluster's GPUs."""
    import ray

    from .models import resolve_precision

    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    if gpus > cluster_gpus and options.address is None and not os.environ.get("RAY_ADDRESS"):
        raise UsageError(f"--gpus-per-actor {gpus:g}: this machine's cluster has {cluster_gpus:g} GPUs")
    actors = options.actors or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
    device = "cuda" if gpus else "cpu"
    # The driver's precision where it runs on the same kind of device, else that device's default (bf16 on
    # CUDA); the store keys vectors by it, so a CPU driver never files bf16 vectors as fp32.
    import torch

    same = model.device.type == device
    precision = model.precision if same else resolve_precision(None, torch.device(device))
    return {"actors": actors, "gpus": gpus, "cpus": options.cpus_per_actor or 1.0, "device": device,
            "precision": precision}  # fmt: skip


def _run(model, todo: list[dict], plan: dict, batch_size: int, draft, max_pixels, file_timeout) -> Iterator[dict]:
    """Rows {index, reason, vector, content_hash, size, mtime_ns} for `todo`, in index order."""
    import ray
    from PIL import Image

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in walk order, so the driver never buffers far
    context.enable_progress_bars = False  # zsclip's own progress bar counts records
    shape = tuple(model.preprocess(Image.new("RGB", (8, 8))).shape)
    dataset = (
        ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // batch_size)))
        .map_batches(
            Decode(model.preprocess, shape, draft, max_pixels, file_timeout),
            batch_size=batch_size, batch_format="numpy", num_cpus=1,
            # What a decode task holds: its process (DECODE_TASK_MEMORY) and its batch of float32 pixels,
            # twice. Declaring it also keeps Ray Data from fusing decoding into the model actors (it fuses a task
            # map into an actor map with equal resources, as on a CPU-only cluster): decoding stays in tasks
            # that scale with the CPUs and overlap the actors' encoding.
            memory=DECODE_TASK_MEMORY + 2 * 4 * batch_size * math.prod(shape),
        )
        .map_batches(
            Embedder,
            fn_constructor_kwargs={"spec": model.spec, "fingerprint": model.fingerprint, "device": plan["device"],
                                   "precision": plan["precision"], "shape": shape},
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            batch_size=batch_size, batch_format="numpy", num_gpus=plan["gpus"], num_cpus=plan["cpus"],
        )
    )  # fmt: skip
    pending: dict[int, dict] = {}
    order = iter(row["index"] for row in todo)
    want = next(order, None)
    for batch in _failing_in_one_line(dataset.iter_batches(batch_size=None, batch_format="numpy")):
        for j in range(len(batch["index"])):
            row = {k: batch[k][j] for k in ("index", "reason", "vector", "content_hash", "size", "mtime_ns")}
            row["index"] = int(row["index"])
            row["reason"] = str(row["reason"])
            pending[row["index"]] = row
        while want is not None and want in pending:  # in case an executor ever hands rows back out of order
            yield pending.pop(want)
            want = next(order, None)
