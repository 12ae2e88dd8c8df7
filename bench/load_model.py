"""Time `load_model` on a ViT-B-32 checkpoint (random init, saved as safetensors), each load in a fresh process.

    python bench/load_model.py                 # builds /tmp/zsclip-bench-vitb32.safetensors once
    PYTHONPATH=/other/checkout python bench/load_model.py --weights /tmp/zsclip-bench-vitb32.safetensors

Measures what a run pays before its first image: building the module and loading the weights (the checkpoint's
sha256 is memoised in a private cache before timing, so hashing is not counted), and the import of zsclip's model
module. Run it against two checkouts to compare; the lazy load of a fully cached run is timed as well where the
checkout has it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import inspect, json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from zsclip.models import load_model
import open_clip  # timed apart: a checkout that imports it inside load_model would otherwise pay it there
t2 = time.perf_counter()
lazy = {"lazy": False} if "lazy" in inspect.signature(load_model).parameters else {}
model = load_model(sys.argv[1], device="cpu", **lazy)
model.model  # built
t3 = time.perf_counter()
cached = None
if lazy:
    t = time.perf_counter()
    again = load_model(sys.argv[1], device="cpu")
    cached = time.perf_counter() - t if not again.loaded else None
print(json.dumps({"torch": t1 - t0, "import": t2 - t1, "load": t3 - t2, "cached": cached}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=os.path.join(tempfile.gettempdir(), "zsclip-bench-vitb32.safetensors"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    weights = Path(args.weights)
    if not weights.is_file():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32-quickgelu")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    spec = f"ViT-B-32-quickgelu:{weights}"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ZSCLIP_CACHE_DIR": cache}
        runs = []
        for i in range(args.repeat + 1):
            out = subprocess.run(  # cwd: the checkout on PYTHONPATH, not the one in the working directory
                [sys.executable, "-c", _CHILD, spec], env=env, capture_output=True, text=True, cwd=cache
            )
            if out.returncode:
                sys.exit(out.stderr)
            if i:  # the first run hashes the checkpoint into the memo
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"ViT-B-32 checkpoint, {len(runs)} fresh processes, median seconds")
    print("| step | s |\n|---|---:|")
    for key, label in (
        ("torch", "import torch"),
        ("import", "import zsclip.models and open_clip"),
        ("load", "load_model (build + weights)"),
        ("cached", "load_model, all cached (module not built)"),
    ):
        values = [r[key] for r in runs if r[key] is not None]
        print(f"| {label} | {statistics.median(values):.3f} |" if values else f"| {label} | n/a |")


if __name__ == "__main__":
    main()
