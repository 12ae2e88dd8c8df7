"""Which int8 image tower? The ways issue 23 names, side by side on the same models, images and threads.

    python bench/int8_methods.py --trained DIR [--per-set 300] [--accuracy-control]

Methods (the fp32 ONNX export of zsclip.backends is the input of each):
- dynamic: ONNX Runtime's dynamic quantization of MatMul/Gemm (what zsclip.backends.int8 ships).
- static: QDQ static quantization, per-channel int8 weights, uint8 activations calibrated (MinMax) on 64 images
  of the set itself and 64 built-in ones, MatMul/Gemm.
- static-x: static, with the sensitive operations kept in fp32 (convolutions: the patch embedding; the last
  projection; the attention products, MatMuls of two activations). Layer norms and softmax stay fp32 in both.
- openvino: OpenVINO with NNCF's post-training quantization on the same calibration images (if installed:
  `pip install openvino nncf`); with --accuracy-control, also NNCF's accuracy-aware quantization, allowed a 0.5
  point drop of top-1 agreement with fp32 on the set's images (the tiny ViT on --accuracy-control-set only: slow).

Per model and data set: top-1 agreement with the fp32 tower's labels (its text classifier, `shapes` templates),
min embedding cosine, and images per second at batch 32 (2 threads, all methods in this one run).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run as a script, bench/ is on sys.path: the data sets and decoding are cpu_speed.py's.
from cpu_speed import decoded, image_sets, load

THREADS = 2


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ort_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": x})[0]


def sensitive_nodes(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    products = [n.name for n in graph.node if n.op_type == "MatMul" and not set(n.input) & weights]
    projections = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & weights]
    return convs + products + projections[-1:]


def static(fp32: Path, target: Path, calibration: np.ndarray, exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"pixels": calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(fp32), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=exclude,
    )  # fmt: skip


def openvino_runners(fp32: Path, calibration: np.ndarray, check: tuple | None, transformer: bool) -> dict:
    import nncf
    import openvino as ov

    core = ov.Core()
    model = ov.convert_model(str(fp32))
    config = {"INFERENCE_NUM_THREADS": THREADS}

    def runner(m):
        compiled = core.compile_model(m, "CPU", config)
        return lambda x: compiled(x)[0]

    data = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    kind = nncf.ModelType.TRANSFORMER if transformer else None
    out = {"openvino fp32": runner(model), "openvino": runner(nncf.quantize(model, data, model_type=kind))}
    if check is not None:
        pixels, labels, weights = check

        def agreement(compiled, items) -> float:
            got = np.concatenate([unit(compiled(x)[0]) for x in items]) @ weights.T
            return float((got.argmax(-1) == labels).mean())

        validation = nncf.Dataset([pixels[i : i + 32] for i in range(0, len(pixels), 32)])
        tuned = nncf.quantize_with_accuracy_control(
            model, data, validation, validation_fn=agreement, max_drop=0.005, drop_type=nncf.DropType.ABSOLUTE,
            model_type=kind,
        )  # fmt: skip
        out["openvino accuracy-aware"] = runner(tuned)
    return out


def embed(run, pixels: np.ndarray) -> np.ndarray:
    return unit(np.concatenate([run(pixels[i : i + 32]) for i in range(0, len(pixels), 32)]))


def rate(run, pixels: np.ndarray) -> float:
    """Images per second at batch 32, over at least a second of work."""
    run(pixels[:32])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        for i in range(0, len(pixels), 32):
            run(pixels[i : i + 32])
        done += len(pixels)
    return done / (time.perf_counter() - start)


def compare(spec: str, name: str, args, cache, work: Path) -> None:
    from zsclip.backends import Exports, builtin_images
    from zsclip.backends.int8 import quantize_image_tower
    from zsclip.models import load_model
    from zsclip.zeroshot.classifier import build_classifier

    model = load_model(spec, device="cpu")
    fp32 = Exports(model, cache, show=False).ensure("image", "fp32")
    transformer = "ViT" in name
    quantize_image_tower(fp32, work / "dynamic.onnx")
    builtin = model.preprocess.normalize(builtin_images(model))
    for set_name, (paths, _, classes) in image_sets(args.per_set, args.shapes_eval).items():
        pixels = model.preprocess.normalize(decoded(model, paths))
        weights = build_classifier(model, classes, "shapes").weights
        calibration = np.concatenate([pixels[:64], builtin]).astype(np.float32)
        runners = {"fp32": ort_runner(fp32), "dynamic": ort_runner(work / "dynamic.onnx")}
        static(fp32, work / "static.onnx", calibration, [])
        runners["static"] = ort_runner(work / "static.onnx")
        static(fp32, work / "static-x.onnx", calibration, sensitive_nodes(fp32))
        runners["static-x"] = ort_runner(work / "static-x.onnx")
        vectors = {"fp32": embed(runners["fp32"], pixels)}
        labels = (vectors["fp32"] @ weights.T).argmax(-1)
        if args.openvino:
            aware = args.accuracy_control and "ViT" in name and set_name == args.accuracy_control_set
            check = (pixels, labels, weights) if aware else None
            runners.update(openvino_runners(fp32, calibration, check, transformer))
        for method, run in runners.items():
            got = vectors["fp32"] if method == "fp32" else embed(run, pixels)
            agree = float(((got @ weights.T).argmax(-1) == labels).mean())
            cos = float((got * vectors["fp32"]).sum(-1).min())
            speed = rate(run, pixels[:96])
            print(f"| {name} | {set_name} | {method} | {agree:.2%} | {cos:.5f} | {speed:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", type=Path, help="a tiny-vit model directory from `zsclip train`")
    parser.add_argument("--shapes-eval", type=Path, help="the shapes world's eval split")
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--models", default="shapes,trained")
    parser.add_argument("--accuracy-control", action="store_true")
    parser.add_argument("--accuracy-control-set", default="cifar10-test", help="the set it runs on (it is slow)")
    args = parser.parse_args()
    from zsclip.store.cache import Cache

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice on every call
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401

        args.openvino = True
    except ImportError:
        args.openvino = False
        print("(openvino and nncf are not installed: their rows are left out)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="zsclip-int8-"))
    cache = Cache(Path(os.environ.get("ZSCLIP_CACHE_DIR", work / "cache")))
    print(f"# bench/int8_methods.py, {os.cpu_count()} CPUs, {THREADS} threads, {load()}\n")
    print("| model | set | method | top-1 agreement with fp32 | min cosine | img/s |")
    print("|---|---|---|---:|---:|---:|")
    models = {"shapes": ("shapes", "shipped shapes ResNet"), "trained": (args.trained, "tiny ViT trained here")}
    for key in args.models.split(","):
        spec, name = models[key]
        if spec is None:
            print(f"(no --trained model: {name} left out)", file=sys.stderr)
            continue
        compare(str(spec), name, args, cache, work)
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
