"""Where vectors are computed: the PyTorch module itself, or its towers exported to ONNX Runtime (fp32, or int8
weights by dynamic quantization), for CPUs without a GPU.

Only the encoder changes: decoding, skip rules, streaming, the store, resume and output are the torch path's.
`use_backend(model, "onnx")` fills `ClipModel.backend` and `ClipModel.encoder`; zsclip.encode and zsclip.text call
the encoder when there is one. Exports live in `<cache>/onnx/<model>/`, one per model fingerprint (dynamic batch
axis; the CLIP text tower also has a dynamic sequence axis, so prompts still run only to their longest token),
written atomically and checked against their recorded sha256 before use, so a damaged file is rebuilt, not used.

`auto` measures, once per model and machine, the torch, onnx and onnx-int8 image towers on a built-in check
(shapes-world pictures and blurred noise x 36 class prompts) and picks the fastest whose top-1 agreement with
torch meets the bar (onnx 99.9%, onnx-int8 99.5%: on the check's 96 images that is every label). On CUDA or MPS
it is always torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import atomic
from .defaults import BACKENDS
from .errors import UsageError, ZsclipError
from .identity import StateError, read_state, write_state
from .progress import log
from .similarity import probabilities, unit

if TYPE_CHECKING:
    from .cache import Cache
from .models import ClipModel

PIP = "pip install 'zsclip[onnx]'"
# Bump when the exported graphs change, so old exports are rebuilt rather than reused.
EXPORT_VERSION = 2
OPSET = 17
KIND = "onnx export"
# Top-1 agreement with torch that `auto` requires (issue 18).
BARS = {"onnx": 0.999, "onnx-int8": 0.995}
CHECK_IMAGES = 96  # top-1 agreement on these; at the bars above, every label must agree
TIMED_IMAGES = 32


def resolve_backend(backend: str | None = None) -> str:
    """The backend name: the argument, else $ZSCLIP_BACKEND, else torch."""
    backend = backend or os.environ.get("ZSCLIP_BACKEND") or "torch"
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
    return backend


def require_onnxruntime(backend: str = "onnx") -> None:
    """One line naming the pip command when the optional extra is missing."""
    try:
        importlib.import_module("onnx")
        importlib.import_module("onnxruntime")
    except ImportError as exc:
        missing = exc.name or "onnxruntime"
        raise ZsclipError(f"--backend {backend} needs {missing}, which is not installed: {PIP}") from None


def use_backend(
    model: ClipModel, backend: str | None = None, *, cache: Cache | None = None, show: bool = True
) -> ClipModel:
    """Switch `model` (in place, and returned) to compute vectors with `backend`: torch, onnx, onnx-int8 or auto.

    Exports the towers on first use for this model (with progress on stderr when `show`); `auto` also measures
    once and remembers its choice. Raises UsageError for an ONNX backend on a GPU device or with non-fp32 precision.
    """
    from .cache import Cache

    backend = resolve_backend(backend)
    if backend == "torch" or (backend == "auto" and model.device.type != "cpu"):
        model.backend, model.encoder = "torch", None
        return model
    if model.device.type != "cpu":
        raise UsageError(f"--backend {backend} runs on the CPU: add --device cpu, or use --backend torch")
    if model.precision != "fp32":
        if backend == "auto":
            model.backend, model.encoder = "torch", None
            return model
        raise UsageError(f"--backend {backend} computes in fp32: drop --precision {model.precision}")
    require_onnxruntime(backend)
    exports = Exports(model, cache or Cache(), show=show)
    if backend == "auto":
        backend = exports.choose()
        if backend == "torch":
            model.backend, model.encoder = "torch", None
            return model
    exports.ensure(int8=backend == "onnx-int8")
    model.backend, model.encoder = backend, OnnxEncoder(exports, int8=backend == "onnx-int8")
    return model


# -- the encoder ---------------------------------------------------------------------------------------------
class OnnxEncoder:
    """The image and text towers as ONNX Runtime sessions, opened on first use (a run whose vectors all come from
    the cache opens neither)."""

    def __init__(self, exports: Exports, int8: bool):
        self.exports, self.int8 = exports, int8
        self._sessions: dict[str, Any] = {}

    def _session(self, tower: str):
        if tower not in self._sessions:
            self._sessions[tower] = self.exports.session(tower, self.int8)
        return self._sessions[tower]

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        """Unnormalised float32 image embeddings [batch, dim] of normalised pixels [batch, 3, h, w]."""
        return self._session("image").run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    @property
    def pool(self) -> dict | None:
        """How the text tower pools (zsclip.text.pooled_at), from what the export recorded."""
        return self.exports.meta()["pool"]

    def encode_text(self, tokens: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """Unnormalised float32 text embeddings; with `positions`, the batch runs only to its last pooled token."""
        feeds = {}
        if positions is not None:
            tokens = tokens[:, : int(positions.max()) + 1]
            feeds["positions"] = positions.astype(np.int64)
        feeds["tokens"] = np.ascontiguousarray(tokens, dtype=np.int64)
        return self._session("text").run(None, feeds)[0]


# -- exports -------------------------------------------------------------------------------------------------
def _threads() -> int:

    return max(1, torch.get_num_threads())


class Exports:
    """The ONNX files of one model in the cache directory, made on demand and verified before use."""

    def __init__(self, model: ClipModel, cache: Cache, show: bool = True):
        self.model, self.cache, self.show = model, cache, show
        digest = hashlib.sha256(f"{model.fingerprint}|export-{EXPORT_VERSION}|opset-{OPSET}".encode()).hexdigest()
        self.directory = Path(cache.directory) / "onnx" / digest[:24]
        self.meta_path = self.directory / "export.json"
        self._meta: dict | None = None

    def path(self, tower: str, int8: bool) -> Path:
        return self.directory / f"{tower}{'-int8' if int8 else ''}.onnx"

    def made_from(self) -> dict:
        return {"fingerprint": self.model.fingerprint, "export_version": EXPORT_VERSION, "opset": OPSET}

    def meta(self) -> dict:
        """export.json: a state file (zsclip.identity) naming the weights and export format the files were made
        from, and each file's size and sha256. One made from anything else, or damaged, lists no file."""
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

    def _intact(self, path: Path) -> bool:
        """The file is there and has the sha256 recorded when it was written (memoised by size and mtime)."""
        want = self.meta()["files"].get(path.name)
        if not want or not path.is_file() or path.stat().st_size != want["size"]:
            return False
        return self.cache.file_sha256(path) == want["sha256"]

    def ensure(self, int8: bool) -> None:
        """Export (and quantize) whatever is missing or damaged."""
        for tower in ("image", "text"):
            self._ensure(tower, int8)

    def _ensure(self, tower: str, int8: bool) -> Path:
        path = self.path(tower, int8)
        if self._intact(path):
            return path
        if path.exists() or self.meta()["files"].get(path.name):
            log(f"warning: ONNX export {path} is missing or damaged; rebuilding it")
        fields = {}
        if int8:
            source = self._ensure(tower, False)
            with self._step(f"quantizing the {tower} tower of {self.model.spec} to int8 (once per model)"):
                _quantize(source, path)
        else:
            with self._step(f"exporting the {tower} tower of {self.model.spec} to ONNX (once per model)"):
                pool = _export(self.model.model, tower, path)
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

    def session(self, tower: str, int8: bool):
        """An ONNX Runtime session for the tower; a file that fails to load is rebuilt once."""
        import onnxruntime as ort

        path = self._ensure(tower, int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for an unreadable or invalid model
            log(f"warning: ONNX export {path} cannot be loaded ({' '.join(str(exc).split())[:200]}); rebuilding it")
            path.unlink(missing_ok=True)
            self.meta()["files"].pop(path.name, None)
            path = self._ensure(tower, int8)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    # -- auto ----------------------------------------------------------------------------------------------
    def choose(self) -> str:
        """The remembered choice for this machine, else measure torch, onnx and onnx-int8 once and remember."""
        auto_path = self.directory / "auto.json"
        machine = _machine()
        try:
            remembered = json.loads(auto_path.read_text(encoding="utf-8"))
            if remembered.get("machine") == machine:
                return remembered["choice"]
        except (OSError, ValueError, KeyError):
            pass
        self.ensure(int8=True)
        results = measure(self.model, self)
        ok = [name for name, r in results.items() if r["agreement"] >= BARS.get(name, 0.0)]
        choice = max(ok, key=lambda name: results[name]["images_per_s"])
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic.write_text(
            auto_path, json.dumps({"machine": machine, "choice": choice, "results": results}, indent=2) + "\n"
        )
        summary = ", ".join(
            f"{name} {r['images_per_s']:.1f} img/s agreement {r['agreement']:.1%}"
            + ("" if name in ok else f" (below {BARS[name]:.1%})")
            for name, r in results.items()
        )
        log(f"--backend auto for {self.model.spec} on this machine: {choice} ({summary}); remembered in {auto_path}")
        return choice


def _machine() -> str:
    """What the speed ranking depends on: the CPU, the thread count and the library versions."""
    import onnxruntime

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}|{os.cpu_count()} cpus|{_threads()} threads|torch {torch.__version__}|ort {onnxruntime.__version__}"


def check_images(model: ClipModel, n: int = CHECK_IMAGES) -> np.ndarray:
    """The built-in check's pixels, preprocessed as the model's own images are: half shapes-world pictures, half
    blurred noise. Noise is out of every model's domain, so its class probabilities are flat and near-ties common:
    the case where int8 flips labels (measured: the shipped model agrees on 99.9% of its own eval split with int8,
    on 97% of real photos)."""
    from PIL import Image, ImageFilter

    from . import shapes

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i % 2:
            noise = rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)
            image = Image.fromarray(noise).resize((224, 224), Image.BILINEAR).filter(ImageFilter.GaussianBlur(2))
        else:
            colour, shape = shapes.COMPOSITIONS[(i // 2) % len(shapes.COMPOSITIONS)]
            image = shapes.render(shapes.sample_scene(rng, colour, shape), 224, rng)
        out.append(model.preprocess.geometry(image))
    return np.stack(out)


def measure(model: ClipModel, exports: Exports) -> dict[str, dict]:
    """Per backend: image throughput and top-1 agreement with torch (images and prompts through each backend)."""
    from . import shapes
    from .encode import encode_images
    from .text import encode_prompts

    pixels = check_images(model)
    prompts = [f"a photo of a {shapes.classname(c, s)}." for c, s in shapes.COMPOSITIONS]
    results, reference = {}, None
    for name in ("torch", "onnx", "onnx-int8"):
        model.backend = name
        model.encoder = None if name == "torch" else OnnxEncoder(exports, int8=name == "onnx-int8")
        try:
            images = encode_images(model, pixels)  # also the warm-up: sessions, kernels, allocator
            timed = pixels[:TIMED_IMAGES]
            seconds = min(_timed(encode_images, model, timed) for _ in range(2))
            text = unit(np.stack(encode_prompts(model, prompts)))
        finally:
            model.backend, model.encoder = "torch", None
        probs = probabilities(images, text, model.logit_scale)
        if reference is None:
            reference = (images, probs)
        results[name] = {
            "images_per_s": len(timed) / seconds,
            "agreement": float((probs.argmax(-1) == reference[1].argmax(-1)).mean()),
            "max_prob_diff": float(np.abs(probs - reference[1]).max()),
            "min_cosine": float((images * reference[0]).sum(-1).min()),
        }
    return results


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# -- exporting -----------------------------------------------------------------------------------------------
def _export(module, tower: str, path: Path) -> dict | None:
    """Export one tower of an open_clip model to `path` (atomically). Returns the text tower's pooling, or None."""
    import io

    from .text import pool_of, pooled_at

    pool = None  # how the text tower pools (zsclip.text.pool_of), where it runs trimmed
    if tower == "image":
        size = getattr(module.visual, "image_size", 224)
        h, w = size if isinstance(size, tuple | list) else (size, size)
        wrapper, args = _ImageTower(module), (torch.randn(3, 3, int(h), int(w)),)
        names, axes = ["pixels"], {"pixels": {0: "batch"}, "features": {0: "batch"}}
    else:
        tokens = torch.randint(1, 1000, (3, 7))
        tokens[:, -1] = 49407  # CLIP's end-of-text id is the largest id, where argmax pooling looks
        pool = pool_of(module)
        positions = pooled_at(pool, tokens.numpy())
        if positions is not None:
            wrapper, args = _TrimmedTextTower(module), (tokens, torch.from_numpy(positions))
            names = ["tokens", "positions"]
            axes = {"tokens": {0: "batch", 1: "sequence"}, "positions": {0: "batch"}, "features": {0: "batch"}}
        else:
            context = int(getattr(module, "context_length", 77))
            wrapper, args = _TextTower(module), (torch.randint(1, 1000, (3, context)),)
            names, axes = ["tokens"], {"tokens": {0: "batch"}, "features": {0: "batch"}}
    buffer = io.BytesIO()
    try:
        with torch.inference_mode(False), torch.no_grad(), _plain_attention(module), _quiet():
            torch.onnx.export(
                wrapper.eval(),
                args,
                buffer,
                input_names=names,
                output_names=["features"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many kinds for an unsupported layer
        raise ZsclipError(
            f"cannot export the {tower} tower to ONNX ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "use --backend torch"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buffer.getvalue())
    return pool


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (QInt8 weights, activations quantized per batch at run time), atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with _quiet():
            # MatMul and Gemm only: ONNX Runtime's ConvInteger is slower than its fp32 convolution on CPUs and cost
            # accuracy on the shipped ResNet (min cosine 0.9990 vs 0.99994); a ViT has just one convolution.
            quantize_dynamic(
                str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
            )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        atomic.fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantizer warn and log freely; the user needs our one-line progress."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


class _ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model.encode_image(pixels)


class _TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens)


class _TrimmedTextTower(torch.nn.Module):
    """zsclip.text's trimmed CLIP text forward, with the sequence length taken from the input (a dynamic axis)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, positions):
        from .text import trimmed_forward

        return trimmed_forward(self.model, tokens, positions)


class _PlainAttention(torch.nn.Module):
    """nn.MultiheadAttention as open_clip uses it (self-attention), in plain tensor operations: the TorchScript
    exporter freezes the batch and sequence sizes of the fused version into its reshapes."""

    def __init__(self, mha: torch.nn.MultiheadAttention):
        super().__init__()
        self.mha = mha
        self.heads = mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **kwargs):
        mha = self.mha
        if (key is not None and key is not query) or (value is not None and value is not query):
            return mha(query, key, value, need_weights=need_weights, attn_mask=attn_mask, **kwargs)  # cross-attention
        x = query if mha.batch_first else query.transpose(0, 1)
        qkv = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.head_dim)).transpose(1, 3).unbind(2)  # [B, H, L, d]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(attn_mask, float("-inf"))
            scores = scores + attn_mask
        out = mha.out_proj((scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
        return (out if mha.batch_first else out.transpose(0, 1)), None


@contextlib.contextmanager
def _plain_attention(module) -> Iterator[None]:
    """Swap every self-attention nn.MultiheadAttention of `module` for PlainAttention during the export."""
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.MultiheadAttention) and child._qkv_same_embed_dim:
                setattr(parent, name, _PlainAttention(child))
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
