"""One model's ONNX files in the cache: `<cache>/onnx/<digest>/`, one folder per model fingerprint and export format.

`export.json` is a state file (zsclip.store.identity) naming the weights and export version the files were made from,
and each file's size and sha256; a file is used only when it matches (a damaged one is rebuilt, with a warning),
and one made from anything else is never read. It also records what a run needs to use the files without torch:
how the text tower pools, and, for the int8 image tower, what calibrated it. Reading and running the files needs
no torch; making them imports it (zsclip.backends.onnx_export), once per model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsclip.backends.int8 import USER_IMAGES, builtin_images, errors, quantize_image_tower
from zsclip.backends.sessions import machine, open_session
from zsclip.core import atomic
from zsclip.core.locks import Lock
from zsclip.core.progress import log
from zsclip.store.identity import StateError, read_state, write_state
from zsclip.zeroshot.similarity import unit

if TYPE_CHECKING:
    import numpy as np

    from zsclip.models import ClipModel
    from zsclip.store.cache import Cache

# Bump when the exported graphs change, so old exports are rebuilt rather than reused.
EXPORT_VERSION = 3
OPSET = 17
KIND = "onnx export"
VARIANTS = ("fp32", "int8")


class Exports:
    """The ONNX files of one model, made on demand and verified before use. `calibration(model)` gives the images
    an int8 image tower is calibrated on (zsclip.backends.int8), when one has to be made."""

    def __init__(
        self,
        model: ClipModel,
        cache: Cache,
        show: bool = True,
        calibration: Callable[[ClipModel], np.ndarray] | None = None,
    ):
        self.model, self.cache, self.show, self.calibration = model, cache, show, calibration
        digest = hashlib.sha256(f"{model.fingerprint}|export-{EXPORT_VERSION}|opset-{OPSET}".encode()).hexdigest()
        self.directory = Path(cache.directory) / "onnx" / digest[:24]
        self.meta_path = self.directory / "export.json"
        self._meta: dict | None = None
        self._lock, self._depth = None, 0

    def path(self, tower: str, variant: str = "fp32") -> Path:
        return self.directory / f"{tower}{'' if variant == 'fp32' else '-' + variant}.onnx"

    def made_from(self) -> dict:
        return {"fingerprint": self.model.fingerprint, "export_version": EXPORT_VERSION, "opset": OPSET}

    def meta(self) -> dict:
        """export.json's fields; one made from anything else, or damaged, lists no file."""
        if self._meta is None:
            try:
                self._meta = read_state(self.meta_path, KIND, self.made_from())
            except StateError as exc:
                if self.meta_path.exists():
                    log(f"warning: {exc}; the ONNX export is rebuilt")
                self._meta = {"files": {}}
            if not isinstance(self._meta.get("files"), dict):
                self._meta = {"files": {}}
        return self._meta

    def intact(self, tower: str, variant: str = "fp32") -> bool:
        """The file is there and has the sha256 recorded when it was written (memoised by size and mtime)."""
        path = self.path(tower, variant)
        return self._same(path, self.meta()["files"].get(path.name))

    def _same(self, path: Path, want: dict | None) -> bool:
        """The file at `path` is the one `want` records (size, sha256)."""
        if not want or not path.is_file() or path.stat().st_size != want["size"]:
            return False
        return self.cache.file_sha256(path) == want["sha256"]

    def ready(self, variant: str) -> bool:
        """Whether a run with this image variant can start without making anything (and so without torch)."""
        files = self.intact("image", variant) and self.intact("text")
        return files and (variant == "fp32" or (self.intact("image") and self.check_intact()))

    # -- the int8 label check's calibration (zsclip.backends.int8) ---------------------------------------------
    @property
    def check_path(self) -> Path:
        return self.directory / "image-int8-check.npy"

    def check_intact(self) -> bool:
        """The check's errors are there, undamaged, and were measured on the int8 tower now on disk (a damaged tower
        is rebuilt, and its check measured again)."""
        meta = self.meta()
        tower = meta["files"].get(self.path("image", "int8").name)
        if not tower or meta.get("check", {}).get("int8_sha256") != tower["sha256"]:
            return False
        return self.intact("image", "int8") and self._same(self.check_path, meta["files"].get(self.check_path.name))

    def ensure_check(self) -> np.ndarray:
        """The int8 tower's errors on the calibration images, measured if missing or made from another tower."""
        import numpy as np

        if not self.check_intact():
            with self._making():
                self._meta = None  # another process may have measured it while this one waited
                if not self.check_intact():
                    self._measure_check()
        return np.load(self.check_path)

    def _measure_check(self) -> None:
        import numpy as np

        own = self.calibration(self.model) if self.calibration else None
        own = own[:USER_IMAGES] if own is not None and len(own) else None
        pixels = builtin_images(self.model) if own is None else np.concatenate([own, builtin_images(self.model)])
        with self._step(f"calibrating the int8 label check of {self.model.spec} on {len(pixels)} images"):
            x = self.model.preprocess.normalize(pixels)
            fp32 = _unit_run(self.session("image", "fp32"), x)
            int8 = _unit_run(self.session("image", "int8"), x)
            atomic.write_bytes(self.check_path, _npy(errors(fp32, int8)))
        tower = self.meta()["files"][self.path("image", "int8").name]["sha256"]
        images = {"own": 0 if own is None else len(own), "built-in": len(pixels) - (0 if own is None else len(own))}
        self._record(self.check_path, check={"int8_sha256": tower, "images": images})

    def ensure(self, tower: str, variant: str = "fp32") -> Path:
        """The file, made (exported, quantized) if it is missing or damaged."""
        path = self.path(tower, variant)
        if self.intact(tower, variant):
            return path
        with self._making():
            self._meta = None  # another process may have made it while this one waited
            if self.intact(tower, variant):
                return path
            return self._make(tower, variant, path)

    @contextlib.contextmanager
    def _making(self) -> Iterator[None]:
        """One process at a time makes this model's files (ONNX Runtime's quantizer writes temporary files of fixed
        names beside its input: two first runs at once crashed one of them); the others wait, then find them made."""
        if self._depth == 0:
            what = f"the ONNX export of {self.model.spec}"
            self._lock = Lock(self.directory / ".making.lock", what).acquire_waiting(timeout=3600)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._lock.release()

    def _make(self, tower: str, variant: str, path: Path) -> Path:
        if path.exists() or self.meta()["files"].get(path.name):
            log(f"warning: ONNX export {path} is missing or damaged; rebuilding it")
        fields: dict[str, Any] = {}
        if variant == "int8":
            source = self.ensure(tower, "fp32")
            with self._step(f"making the int8 {tower} tower of {self.model.spec} (once per model)"):
                quantize_image_tower(source, path)
            self._record(path)
            self.ensure_check()
            return path
        from zsclip.backends.onnx_export import export_tower  # heavy: torch, only when exporting

        with self._step(f"exporting the {tower} tower of {self.model.spec} to ONNX (once per model)"):
            pool = export_tower(self.model.model, tower, path)
        if tower == "text":
            fields["pool"] = pool
        self._record(path, **fields)
        return path

    @contextlib.contextmanager
    def _step(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.show:
            log(f"{what} ...")
        yield
        if self.show:
            log(f"{what}: done in {time.perf_counter() - start:.1f} s")

    def _record(self, path: Path, **fields) -> None:
        self._meta = None  # re-read: another process may have recorded its own export meanwhile
        meta = self.meta()
        meta.update(spec=self.model.spec, **fields)
        meta["files"][path.name] = {"size": path.stat().st_size, "sha256": self.cache.file_sha256(path)}
        write_state(self.meta_path, KIND, self.made_from(), meta)

    def session(self, tower: str, variant: str = "fp32"):
        """An ONNX Runtime session for the file, from its optimized graph for this machine where one was kept; a
        file that fails to load is rebuilt once."""
        path = self.ensure(tower, variant)
        try:
            return self._open(path)
        except Exception as exc:  # ORT raises its own types for an unreadable or invalid model
            log(f"warning: ONNX export {path} cannot be loaded ({' '.join(str(exc).split())[:200]}); rebuilding it")
            path.unlink(missing_ok=True)
            self.meta()["files"].pop(path.name, None)
            return self._open(self.ensure(tower, variant))

    def _open(self, path: Path):
        """The session; its optimized graph (and the weights file beside it), made from this very file on this
        machine, opens without optimizing again, and is made (atomically) where it is missing, damaged or made from
        another file."""
        source = self.meta()["files"][path.name]["sha256"]
        machine_id = hashlib.sha256(machine().encode()).hexdigest()[:12]
        optimized = path.with_name(f"{path.stem}.{machine_id}.optimized.onnx")
        weights = optimized.with_suffix(".weights")
        kept = self.meta().get("optimized", {}).get(optimized.name)
        intact = kept and self._same(optimized, kept) and self._same(weights, kept.get(weights.name))
        if intact and kept.get("made_from") == source:
            with contextlib.suppress(Exception):  # a graph this ONNX Runtime cannot read: made again below
                return open_session(optimized, optimized=True)
        with atomic.written_at(optimized) as tmp:
            session = open_session(path, save_optimized=tmp, weights=weights.name)
            # The graph names its weights file by this name, beside it: in place before the graph is.
            staged = tmp.with_name(weights.name)
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
            os.replace(staged, weights)
        self._meta = None  # re-read: another process may have recorded its own files meanwhile
        meta = self.meta()
        entry = {
            "made_from": source,
            "size": optimized.stat().st_size,
            "sha256": self.cache.file_sha256(optimized),
            weights.name: {"size": weights.stat().st_size, "sha256": self.cache.file_sha256(weights)},
        }
        meta.setdefault("optimized", {})[optimized.name] = entry
        write_state(self.meta_path, KIND, self.made_from(), meta)
        return session


def _unit_run(session, x: np.ndarray, batch: int = 32) -> np.ndarray:
    import numpy as np

    return unit(np.concatenate([session.run(None, {"pixels": x[i : i + batch]})[0] for i in range(0, len(x), batch)]))


def _npy(array: np.ndarray) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
