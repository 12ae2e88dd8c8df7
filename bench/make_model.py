"""Make a random-init open_clip model in open_clip's local-dir format, for offline demos and benchmarks.

    python bench/make_model.py tiny-vit /tmp/zsclip-tiny          # a 3M-parameter ViT, seconds to build
    python bench/make_model.py ViT-B-32 /tmp/vitb32-random    # a real architecture, random weights

Random weights give meaningless labels; they exercise every code path without downloading anything.
"""

from __future__ import annotations

import argparse

from zsclip.models import model_config, random_init_model, save_model_dir

OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", help="'tiny-vit' (zsclip/configs) or an open_clip architecture name")
    parser.add_argument("output", help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = model_config(args.arch)
    if cfg is None:
        parser.error(f"unknown architecture {args.arch!r}")
    model = random_init_model(cfg, args.seed)
    save_model_dir(model, cfg, args.output, preprocess_cfg=OPENAI_PREPROCESS, metadata={"note": "random init"})
    print(args.output)


if __name__ == "__main__":
    main()
