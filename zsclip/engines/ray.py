"""The Ray engine: the embed stream executed on a Ray cluster with Ray Data.

An executor, not a fork. The driver walks the sources exactly as the local engine does (zsclip.pipeline.sources.walk)
and
looks files up in the image-embedding store by their full stat identity (zsclip.store.identity); the rest go to Ray
Data, where CPU tasks read the bytes (local paths, or s3:// gs:// abfs:// URIs through pyarrow's file systems),
hash them and decode them with zsclip.pipeline.images.decode_image and the same limits (a bad file becomes a row with
its
skip reason, never a failed task), and an actor pool holding one model per actor encodes them
(zsclip.pipeline.encode.encode_images: bf16 autocast on CUDA). The driver gets the rows back in walk order, stores the
new
vectors and yields the same EmbeddedBatch records as the local engine, so classify, eval, prompt comparison and
their writers do not know which engine ran. Probabilities stay on the driver: one code path for both engines, and
a vector is 512 floats where a classifier can be 21k classes. A run that fails on the cluster is one error line;
Ray's own output is kept off stdout (zsclip.engines.ray_output).

Nothing heavy is imported at module level: the CLI imports RayOptions at start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zsclip.backends import load_model
from zsclip.core import progress
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS
from zsclip.engines.base import EmbeddedBatch, ReadOptions
from zsclip.models import resolve_precision, vector_key_for
from zsclip.pipeline.encode import draft_size, encode_images
from zsclip.pipeline.images import SkipFile, check_file, decode_image, time_limit
from zsclip.pipeline.sources import has_image_extension, is_uri, looks_like_image, uri_filesystem, walk
from zsclip.store.cache import Cache
from zsclip.store.embeddings import ImageStore, variant_key
from zsclip.store.identity import FileIdentity

INSTALL = 'pip install "zsclip[ray]"'
# A decode task's process: Python, torch, torchvision and PIL imported (measured peak 555 MiB with batches of 32
# at 224 px), with the 25% headroom Ray Data's memory check asks for.
DECODE_TASK_MEMORY = 700 << 20
ROW_FIELDS = ("index", "reason", "vector", "content_hash", "size", "mtime_ns")


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

    address = options.address or os.environ.get("RAY_ADDRESS") or None
    progress.log(f"ray: connecting to {address}" if address else "ray: starting a local cluster for this run")
    # log_to_driver=False: worker output would otherwise land on our stdout, which holds the results.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the zsclip package folder
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


def read_file(path: str) -> tuple[bytes, int, int]:
    """(bytes, size, mtime_ns) of a local file or a URI; SkipFile with the reason when it cannot be read."""

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
    """Ray Data map_batches function (CPU tasks): paths -> the model's uint8 pixels (Preprocess.geometry), or a
    skip reason per row."""

    preprocess: Callable
    shape: tuple[int, ...]
    draft: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        n = len(batch["path"])
        pixels = np.zeros((n, *self.shape), dtype=np.uint8)  # a skipped row keeps zeros; it is never encoded
        reasons, hashes, sizes, mtimes = [""] * n, [""] * n, np.zeros(n, np.int64), np.zeros(n, np.int64)
        for j, path in enumerate(map(os.fsdecode, batch["path"])):
            try:
                with time_limit(self.file_timeout):
                    data, sizes[j], mtimes[j] = read_file(path)
                    pixels[j] = decode_image(io.BytesIO(data), path, self.preprocess, self.draft, self.max_pixels)
                hashes[j] = hashlib.blake2b(data, digest_size=16).hexdigest()  # as zsclip.store.embeddings.content_hash
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
    """Ray Data actor: one model per actor (loaded from the driver's spec, checked by fingerprint, on the driver's
    backend where it runs on the driver's kind of device); pixels -> unit-norm float32 embeddings."""

    def __init__(
        self, spec: str, fingerprint: str, device: str, precision: str, backend: str, shape: tuple[int, ...]
    ) -> None:
        import numpy as np

        self.model = load_model(spec, device=device, precision=precision, backend=backend, show=False)
        if self.model.fingerprint != fingerprint:
            raise ZsclipError(
                f"--model {spec}: a Ray worker loaded other weights than the driver (fingerprint "
                f"{self.model.fingerprint} != {fingerprint}); give a path every node sees the same"
            )
        self.dim = int(encode_images(self.model, np.zeros((1, *shape), dtype=np.uint8)).shape[-1])

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        ok = np.array([not r for r in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            vectors[ok] = encode_images(self.model, np.ascontiguousarray(batch["pixels"][ok]))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


# -- the driver --------------------------------------------------------------------------------------------
class RayEngine:
    """zsclip.engines.base.Engine on Ray Data, configured by RayOptions. ReadOptions.workers is the local engine's
    and is not used (Ray schedules one decode task per free CPU)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = (options or RayOptions()).check()

    def embed(self, model, sources: list[tuple[str, bool]], read: ReadOptions) -> Iterator[EmbeddedBatch]:
        require_ray()
        with cluster(self.options):
            plan = _plan(model, self.options)
            batch_size = read.batch_size or (256 if plan["device"] == "cuda" else 32)
            draft = None if read.exact else _draft_size(model)
            store = _open_store(model, read, plan, draft)
            entries, stored, storable = _walk(sources, read, store)
            # Paths travel as bytes: Arrow strings must be UTF-8, file names need not be.
            todo = [{"index": i, "path": os.fsencode(p)} for i, p in enumerate(entries) if i not in stored]
            rows = _run(model, todo, plan, batch_size, draft, read.max_pixels, read.file_timeout) if todo else iter(())
            try:
                for start in range(0, len(entries), batch_size):
                    batch, fresh = _batch(
                        model, entries, range(start, min(start + batch_size, len(entries))), stored, storable, rows
                    )
                    if store is not None and fresh and not store.try_put(fresh):
                        store = None
                    yield batch
            finally:
                close = getattr(rows, "close", None)
                if close:
                    close()  # stop the Ray pipeline when the consumer stops early (--strict, an error)
                if store is not None:
                    store.close()


def _draft_size(model) -> int:

    return draft_size(model)


def _open_store(model, read: ReadOptions, plan: dict, draft: int | None):
    """The image store under the variant the actors' vectors have (their device's precision and backend), or
    None."""
    if not read.store:
        return None

    key = vector_key_for(plan["precision"], plan["backend"])
    return ImageStore.open(read.cache or Cache(), model.fingerprint, variant_key(key, model.preprocess_key, draft))


def _walk(sources, read: ReadOptions, store):
    """(entries in walk order, {index: stored vector}, {index: stat key to store a new vector under}): the
    driver's store lookup by the full stat identity, so the driver never reads a file; what the cluster encodes
    is stored under the identity the driver saw, if the bytes read were of it."""

    entries = [
        path
        for path, explicit in walk(sources, read.recursive, read.shard, read.exclude)
        if explicit or has_image_extension(path) or (not is_uri(path) and looks_like_image(path))
    ]
    stored: dict[int, object] = {}
    storable: dict[int, tuple] = {}
    for i, path in enumerate(entries):
        if store is not None and not is_uri(path):
            vector, key = _lookup(store, path)
            if vector is not None:
                stored[i] = vector.copy()
            elif key is not None:
                storable[i] = key
    return entries, stored, storable


def _batch(model, entries, indices, stored, storable, rows) -> tuple[EmbeddedBatch, list]:
    """One EmbeddedBatch of the walk's `indices`, and the (identity, vector) rows to store."""
    import numpy as np

    paths, vectors, hashes, skipped, skipped_at, fresh, encoded = [], [], [], [], [], [], []
    for i in indices:
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
        # Stored only if the bytes the task read are the file the driver stat'ed (same size and mtime): a file
        # replaced meanwhile is encoded for this run but not filed under the old identity.
        if key is not None and (key[1], key[2]) == (int(row["size"]), int(row["mtime_ns"])):
            path_key, size, mtime, ctime, inode = key
            fresh.append((FileIdentity(path_key, size, mtime, row["content_hash"], ctime, inode), row["vector"]))
    features = np.stack(vectors).astype(np.float32, copy=False) if vectors else None
    reused = sum(1 for i in indices if i in stored)
    batch = EmbeddedBatch(paths, features, skipped, reused, skipped_at, encoded, content_hashes=hashes)
    return batch, fresh


def _failing_in_one_line(batches):
    """The batches; a run that fails on the cluster (a model actor that cannot start, a task that keeps dying) is
    one ZsclipError line naming the cause, not Ray's traceback."""

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

    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    if gpus > cluster_gpus and options.address is None and not os.environ.get("RAY_ADDRESS"):
        raise UsageError(f"--gpus-per-actor {gpus:g}: this machine's cluster has {cluster_gpus:g} GPUs")
    actors = options.actors or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
    device = "cuda" if gpus else "cpu"
    # The driver's precision where it runs on the same kind of device, else that device's default (bf16 on
    # CUDA); the store keys vectors by it, so a CPU driver never files bf16 vectors as fp32.
    import torch

    same = model.device_type == device
    precision = model.precision if same else resolve_precision(None, torch.device(device))
    return {
        # The driver's backend, resolved (never "auto" again on a worker, which could choose otherwise): the
        # records are then the local engine's.
        "backend": model.backend if same else "torch",
        "actors": actors,
        "gpus": gpus,
        "cpus": options.cpus_per_actor or 1.0,
        "device": device,
        "precision": precision,
    }


def _run(model, todo: list[dict], plan: dict, batch_size: int, draft, max_pixels, file_timeout) -> Iterator[dict]:
    """Rows {index, reason, vector, content_hash, size, mtime_ns} for `todo`, in index order."""
    import ray
    from PIL import Image

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in walk order, so the driver never buffers far
    context.enable_progress_bars = False  # zsclip's own progress bar counts records
    shape = tuple(model.preprocess.geometry(Image.new("RGB", (8, 8))).shape)
    dataset = (
        ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // batch_size)))
        .map_batches(
            Decode(model.preprocess.geometry, shape, draft, max_pixels, file_timeout),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
            # What a decode task holds: its process (DECODE_TASK_MEMORY) and its batch of uint8 pixels,
            # twice. Declaring it also keeps Ray Data from fusing decoding into the model actors (it fuses a task
            # map into an actor map with equal resources, as on a CPU-only cluster): decoding stays in tasks
            # that scale with the CPUs and overlap the actors' encoding.
            memory=DECODE_TASK_MEMORY + 2 * batch_size * math.prod(shape),
        )
        .map_batches(
            Embedder,
            fn_constructor_kwargs={
                "spec": model.spec,
                "fingerprint": model.fingerprint,
                "device": plan["device"],
                "precision": plan["precision"],
                "backend": plan["backend"],
                "shape": shape,
            },
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            batch_size=batch_size,
            batch_format="numpy",
            num_gpus=plan["gpus"],
            num_cpus=plan["cpus"],
        )
    )
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
