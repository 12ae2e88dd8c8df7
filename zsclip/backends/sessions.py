"""ONNX Runtime sessions on the CPU, with the threads this process may use."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def threads() -> int:
    """Intra-op threads: the cores this process may use (torch's default too), or OMP_NUM_THREADS."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_session(
    path, *, optimized: bool = False, save_optimized: Path | None = None, weights: str | None = None
) -> Any:
    """A session for the model file at `path`. ONNX Runtime optimizes a graph as it opens it (3.6 s for ViT-B-32's
    fp32 image tower on 2 cores, more than a one-image run may take): `save_optimized` keeps the optimized graph,
    which later opens `optimized`. It may hold this CPU's kernels, so it is kept per machine. `weights` names the
    file beside it that holds its weights: a graph whose weights are inside is one protobuf ONNX Runtime parses and
    copies whole (ViT-B-32's image tower 0.38-0.48 s to open here); with the weights beside it, ONNX Runtime maps
    them from the file (0.23 s; the text tower 0.27 -> 0.11 s)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.log_severity_level = 3
    if Path(path).name.startswith("image"):
        # Idle image-tower threads sleep instead of spinning: on 2 cores a spinning encoder starved the decoding
        # worker (bench/cpu_speed.py: int8 end to end 38.4 -> 44.4 img/s, 0.78x -> 1.00x its bare encoder). The
        # text tower, run between decoding batches' worth of small operations, keeps spinning (its latency).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
        if weights is not None:
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights)
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def machine() -> str:
    """What the speed ranking and an optimized graph depend on: the CPU and the library versions (read without
    importing). Not the threads: a run under `taskset` or OMP_NUM_THREADS is the same machine (it was another, so
    auto forgot what `--prepare` measured)."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("torch", "onnxruntime"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    return "|".join([cpu, *versions])
