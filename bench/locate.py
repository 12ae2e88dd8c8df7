"""`zsclip locate` end to end on a long video: how much faster than real time, and how much faster a second query
is once the frame embeddings are in the image-embedding store.

    python bench/locate.py                       # 10-minute 1280x720 30 fps H.264, ViT-B-32 random init, --fps 1
    python bench/locate.py --minutes 1           # a quick correctness run

The video is generated once (a noisy panning background with a moving shape, libx264 `--preset`, keyframe
interval `--gop`, 250 by default as in libx264) and kept in --work. Reported, with the load average (the CPU may
be shared):
- first query: decode + encode + search from an empty cache, and its speed as a multiple of real time;
- second query with a new text: frames come from the store; the ratio first / second;
- reference: decoding every frame of the video (what a naive reader does before it can pick frames by time), for
  the share of decoding this reader avoids; and image encoding alone on the frames that were sampled.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

W, H, RATE = 1280, 720, 30


def make_video(path: Path, minutes: float, gop: int, preset: str) -> None:
    from zsclip.video import write_video

    rng = np.random.default_rng(0)
    background = (120 + rng.normal(0, 20, (H + 64, W + 64, 1))).clip(0, 255).astype(np.uint8).repeat(3, 2)
    yy, xx = np.mgrid[-80:80, -80:80]
    disk = xx**2 + yy**2 < 80**2

    def frames():
        for i in range(int(minutes * 60 * RATE)):
            t = i / RATE
            offset = int(20 + 20 * np.sin(t / 3))
            frame = background[offset : offset + H, offset : offset + W].copy()
            if int(t) // 20 % 2 == 0:  # a red disc, 20 s on, 20 s off
                cx = int(300 + 200 * np.sin(t))
                frame[220:380, cx - 80 : cx + 80][disk] = (215, 35, 35)
            yield frame

    tmp = path.with_suffix(".partial.mp4")
    write_video(str(tmp), frames(), RATE, gop=gop, options={"preset": preset})
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fps", type=float, default=1)
    parser.add_argument("--gop", type=int, default=250)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--model", help="model spec (default: ViT-B-32 random init, made in --work)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "zsclip-bench-locate"))
    parser.add_argument("--no-reference", action="store_true", help="skip the decode-everything reference")
    args = parser.parse_args()

    import torch

    import zsclip
    from zsclip.store.cache import Cache
    from zsclip.video import probe

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"video-{args.minutes:g}min-g{args.gop}-{args.preset}.mp4"
    if not video.exists():
        t = time.perf_counter()
        make_video(video, args.minutes, args.gop, args.preset)
        print(f"generated {video} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    spec = args.model
    if spec is None:
        spec = str(work / "vitb32-random")
        if not (Path(spec) / "open_clip_config.json").exists():
            from zsclip.models import model_config, random_init_model, save_model_dir

            cfg = model_config("ViT-B-32")
            save_model_dir(random_init_model(cfg, 0), cfg, spec, preprocess_cfg={
                "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]})  # fmt: skip
    info = probe(str(video))
    cache = Cache(tempfile.mkdtemp(prefix="cache-", dir=work))  # empty: the first query encodes every frame
    model = zsclip.load_model(spec, device="cpu", cache=cache)
    print(f"video: {info.duration:.0f} s {info.width}x{info.height} {info.rate:g} fps {info.codec}, "
          f"{video.stat().st_size / 1e6:.0f} MB, gop {args.gop}; model {spec}; torch threads "
          f"{torch.get_num_threads()}; cpus {os.cpu_count()}; load {os.getloadavg()[0]:.1f}")  # fmt: skip

    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    first = zsclip.locate(model, video, ["a red circle"], fps=args.fps, cache=cache)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    second = zsclip.locate(model, video, ["a blue square"], fps=args.fps, cache=cache)
    t_second = time.perf_counter() - t
    print(
        f"first query: {t_first:.1f} s for {first.frames} frames ({first.encoded} encoded), "
        f"{info.duration / t_first:.1f}x real time (target >= 10x); load {load0:.1f}-{os.getloadavg()[0]:.1f}"
    )
    print(f"second query, new text: {t_second:.3f} s ({second.encoded} frames encoded), "
          f"{t_first / t_second:.0f}x faster than the first (target >= 50x)")  # fmt: skip

    from zsclip.pipeline.encode import encode_images

    side = model.image_size if isinstance(model.image_size, int) else model.image_size[0]
    x = torch.randn(32, 3, side, side)
    encode_images(model, x[:2])
    t = time.perf_counter()
    encode_images(model, x)
    per_image = (time.perf_counter() - t) / 32
    print(f"reference: image encoding alone {1 / per_image:.1f} img/s, so {first.frames * per_image:.1f} s of the "
          f"first query is encoding {first.frames} frames")  # fmt: skip
    from zsclip.pipeline.encode import draft_size
    from zsclip.video import NONREF_RATIO, FrameReader

    reader = FrameReader(str(video), args.fps, draft_size(model), end=info.duration,
                         skip_nonref=args.fps * NONREF_RATIO <= info.rate)  # fmt: skip
    t = time.perf_counter()
    n = sum(1 for _ in reader)
    t_reader = time.perf_counter() - t
    print(f"this reader alone: {n} frames sampled in {t_reader:.1f} s, {reader.decoded_frames} frames decoded; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if not args.no_reference:
        import av

        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t = time.perf_counter()
            n = sum(1 for _ in container.decode(stream))
            t_all = time.perf_counter() - t
        print(f"reference: decoding all {n} frames takes {t_all:.1f} s ({n / t_all:.0f} frames/s); "
              f"load {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
