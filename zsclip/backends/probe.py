"""`--backend auto`: torch and onnx measured once per model and machine on a fixed probe (speed, and top-1
agreement with torch) by `zsclip models --prepare`, the choice remembered beside the export (`auto.json`, read
without torch); `zsclip models --backends MODEL` prints the table. auto chooses between the two fp32 backends only:
they compute the same vectors, so every command's numbers (eval's against its reference, search rankings, the
store shared by all) are torch's whichever runs. onnx-int8 is measured and shown, and taken only by name.

The probe: 96 built-in pictures, half shapes-world scenes, half blurred noise, against the 36 shapes-world class
prompts. Noise is out of every model's domain, so its probabilities are flat and near-ties common: the case where a
backend's rounding flips labels. onnx-int8 runs with its label check (zsclip.backends.int8), its time including
the images the check re-encodes.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np

from zsclip.backends.encoders import ENCODERS
from zsclip.backends.int8 import builtin_images, threshold, uncertain
from zsclip.backends.sessions import machine
from zsclip.core import atomic
from zsclip.core.progress import log
from zsclip.datasets import shapes
from zsclip.pipeline.encode import encode_images
from zsclip.zeroshot.classifier import encode_prompts
from zsclip.zeroshot.similarity import probabilities, unit

if TYPE_CHECKING:
    from zsclip.backends.exports import Exports

CANDIDATES = ("torch", "onnx", "onnx-int8")  # measured
AUTO = ("torch", "onnx")  # chosen among
# Top-1 agreement with torch that a backend needs to be chosen.
BARS = {"torch": 0.0, "onnx": 0.999, "onnx-int8": 0.995}
# onnx is taken unless torch is this much faster: ONNX Runtime's run needs no torch import (seconds of a short
# run), and a margin keeps a re-measurement on a noisy machine from flipping the choice.
ONNX_MARGIN = 0.9
VERSION = 3  # auto.json's: version 1 could choose onnx-int8, version 2 held one machine
_TOLD: set[str] = set()  # models told about `zsclip models --prepare` in this process
PROBE_IMAGES = 96
TIMED_IMAGES = 32


def _saved(exports: Exports) -> dict:
    """auto.json: the measurement of each machine (CPU and library versions) this cache was prepared on."""
    try:
        data = json.loads((exports.directory / "auto.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("machines"), dict):
        return {}
    return data["machines"]


def remembered(exports: Exports) -> dict | None:
    """What `--prepare` measured on this machine, or None."""
    data = _saved(exports).get(machine())
    return data if isinstance(data, dict) and data.get("choice") in AUTO else None


def auto_choice(exports: Exports, show: bool = True) -> str:
    """What auto runs `exports.model` with: the remembered choice where the files it needs are intact, else torch
    (said once per model and process, with the command that prepares it). Never exports or measures."""
    data = remembered(exports)
    if data is not None and (data["choice"] == "torch" or exports.ready("fp32")):
        return data["choice"]
    spec = exports.model.spec
    if show and spec not in _TOLD:
        _TOLD.add(spec)
        log(
            f"note: --backend auto runs {spec} on torch: it is not prepared for ONNX Runtime on this CPU "
            f"(`zsclip models --prepare {spec}` exports and measures it once; --backend torch, or backend='torch' "
            "in Python, silences this)"
        )
    return "torch"


def choose(exports: Exports, show: bool = True, again: bool = False) -> dict:
    """The remembered measurement for this machine (unless `again`), else measure every backend once and
    remember: onnx where it keeps torch's labels and runs at least ONNX_MARGIN of torch's speed, else torch."""
    data = None if again else remembered(exports)
    if data is not None:
        return data
    results = measure(exports)
    onnx = results["onnx"]
    fast = onnx["images_per_s"] >= ONNX_MARGIN * results["torch"]["images_per_s"]
    choice = "onnx" if onnx["agreement"] >= BARS["onnx"] and fast else "torch"
    data = {"machine": machine(), "choice": choice, "results": results}
    exports.directory.mkdir(parents=True, exist_ok=True)
    machines = {**_saved(exports), machine(): data}  # another machine's measurement (a shared cache) is kept
    atomic.write_text(exports.directory / "auto.json", json.dumps({"version": VERSION, "machines": machines}, indent=2))
    if show:
        log(f"--backend auto for {exports.model.spec} on this machine: {choice} ({summary(results)})")
    return data


def summary(results: dict) -> str:
    return ", ".join(
        f"{name} {r['images_per_s']:.1f} img/s, agreement {r['agreement']:.1%}"
        + ("" if r["agreement"] >= BARS[name] else f" (below {BARS[name]:.1%})")
        for name, r in results.items()
    )


def measure(exports: Exports) -> dict[str, dict]:
    """Per backend: image throughput and top-1 agreement with torch on the probe."""

    model = exports.model
    pixels = builtin_images(model, PROBE_IMAGES)
    prompts = [f"a photo of a {shapes.classname(c, s)}." for c, s in shapes.COMPOSITIONS]
    backend, encoder = model.backend, model.encoder
    vectors, seconds, texts = {}, {}, {}
    try:
        for name in CANDIDATES:
            model.backend = name
            model.encoder = ENCODERS[name](model, exports)
            vectors[name] = encode_images(model, pixels)  # also the warm-up: sessions, kernels, allocator
            seconds[name] = min(_timed(encode_images, model, pixels[:TIMED_IMAGES]) for _ in range(2))
            texts[name] = unit(np.stack(encode_prompts(model, prompts)))
    finally:
        model.backend, model.encoder = backend, encoder
    rechecked = uncertain(vectors["onnx-int8"], texts["onnx"], threshold(exports.ensure_check(), texts["onnx"]))
    vectors["onnx-int8"][rechecked] = vectors["onnx"][rechecked]
    seconds["onnx-int8"] += seconds["onnx"] * rechecked[:TIMED_IMAGES].mean()
    reference = probabilities(vectors["torch"], texts["torch"], model.logit_scale)
    results = {}
    for name in CANDIDATES:
        probs = probabilities(vectors[name], texts["onnx" if name == "onnx-int8" else name], model.logit_scale)
        results[name] = {
            "images_per_s": TIMED_IMAGES / seconds[name],
            "agreement": float((probs.argmax(-1) == reference.argmax(-1)).mean()),
            "max_prob_diff": float(np.abs(probs - reference).max()),
            "min_cosine": float((vectors[name] * vectors["torch"]).sum(-1).min()),
        }
    results["onnx-int8"]["rechecked"] = float(rechecked.mean())
    return results


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
