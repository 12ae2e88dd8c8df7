"""`zsclip train`: contrastive training of an open_clip model on image-caption pairs, top to bottom in one file.

The recipe of the CLIP paper, small: symmetric InfoNCE (image->text and text->image cross-entropy, averaged) over
the batch; a learnable temperature initialised to 0.07 with the logit scale clamped at 100; AdamW with no weight
decay on biases, norms, embeddings and the logit scale; linear warmup, then cosine decay; gradient clipping; bf16
autocast on CUDA. The run is seeded and deterministic on CPU, writes `train_log.csv` every step, evaluates
zero-shot accuracy on an ImageFolder eval split after every epoch (classes named in no training caption are
reported apart as held-out), and checkpoints every epoch so `--resume` continues the same loss curve.

The output directory is open_clip's local-dir format (`open_clip_config.json` + `open_clip_model.safetensors`)
plus zsclip metadata, loadable by `open_clip.create_model_and_transforms("local-dir:DIR")` and `--model DIR`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from zsclip.classify.predict import Prediction, classify
from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.core.paths import check_output_dir, writing
from zsclip.core.progress import bar
from zsclip.core.textfiles import csv_rows, read_text
from zsclip.core.wording import plural
from zsclip.models import ClipModel, model_config, random_init_model, resolve_device, save_model_dir
from zsclip.models.preprocess import Preprocess
from zsclip.pipeline.images import DEFAULT_FILE_TIMEOUT, SkipFile, load_image, time_limit
from zsclip.pipeline.workers import in_worker_process, run_tasks
from zsclip.zeroshot.classifier import build_classifier

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


@dataclass
class TrainConfig:
    """Every knob of a run. Saved in the checkpoint, so `--resume` continues with exactly these values."""

    data: str
    config: str
    output: str
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    wd: float = 0.1
    warmup: int = 200  # steps
    grad_clip: float = 1.0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    workers: int = 0
    seed: int = 0
    eval_dir: str | None = None  # default: DATA/eval when it exists
    templates: str = "photo"  # template set used for the zero-shot evaluation and recommended by the model
    command: str = field(default_factory=lambda: shlex.join(["zsclip", *sys.argv[1:]]))


# -- data --------------------------------------------------------------------------------------------------
def read_captions(data: str | Path) -> tuple[Path, list[tuple[str, str]], int]:
    """(csv path, [(image path, caption)], missing count) from a captions CSV or a folder holding captions.csv."""
    path = Path(data)
    if path.is_dir():
        path = path / "captions.csv"
    if not path.is_file():
        raise UsageError(f"{data}: no captions CSV (expected a file, or a folder with captions.csv)")
    records = list(csv_rows(read_text(path), str(path)))
    found = records[0][1] if records else []
    header = [c.strip() for c in found]
    missing_cols = {"filepath", "caption"} - set(header)
    if missing_cols:
        raise UsageError(
            f"{path}: missing column(s) {', '.join(sorted(missing_cols))}; "
            f"expected a header 'filepath,caption', found {', '.join(found) or 'none'}"
        )
    fcol, ccol = header.index("filepath"), header.index("caption")
    rows = [(_cell(r, fcol), _cell(r, ccol)) for _, r in records[1:]]
    pairs = [(str(path.parent / p), c) for p, c in rows if p and c]
    present = [(p, c) for p, c in pairs if os.path.lexists(p)]  # odd files go on, to be skipped with a reason
    if not present:
        raise UsageError(
            f"{path}: no usable image-caption pairs ({len(rows)} rows, {len(pairs) - len(present)} image files missing)"
        )
    return path, present, len(pairs) - len(present)


def _cell(row: list[str], col: int) -> str:
    """A short row's missing cell is empty: the pair is left out, as one with an empty caption is."""
    return row[col] if col < len(row) else ""


@dataclass
class PairBatch:
    images: np.ndarray | None  # uint8 [n, H, W, 3] (Preprocess.geometry), or None when none could be read
    tokens: np.ndarray | None  # [n, context]
    skipped: list[tuple[str, str]]  # (path, reason)


class PairDataset:
    """Image-caption pairs by index. `dataset(indices)` loads one batch: decoded, preprocessed images and their
    tokenised captions, unreadable images as (path, reason) under classify's rules. It runs in supervised
    workers (zsclip.pipeline.workers) like classify's decoding, so a file that crashes or stalls costs only itself."""

    def __init__(self, pairs: list[tuple[str, str]], preprocess: Callable, tokenizer: Callable):
        self.paths = [p for p, _ in pairs]
        self.tokens = torch.cat([tokenizer(chunk) for chunk in _chunks([c for _, c in pairs], 4096)]).numpy()
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, indices: list[int], failed: list = (), mark: Callable[[int], None] = id) -> PairBatch:
        images, tokens = [], []
        skipped = [(self.paths[i], reason) for i, reason in failed]
        limit = None if in_worker_process() else DEFAULT_FILE_TIMEOUT  # in a worker, the supervisor times files
        for n, i in enumerate(indices):
            mark(n)
            try:
                with time_limit(limit):
                    images.append(load_image(self.paths[i], self.preprocess.geometry))
            except SkipFile as exc:
                skipped.append((self.paths[i], str(exc)))
                continue
            tokens.append(self.tokens[i])
        if not images:
            return PairBatch(None, None, skipped)
        return PairBatch(np.stack(images), np.stack(tokens), skipped)


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffle of one epoch, a pure function of (seed, epoch), so a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


# -- the recipe --------------------------------------------------------------------------------------------
def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i is the positive for row i and column i; features are L2-normalised."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """Weight decay only on weight matrices: not on biases, norms, embeddings or the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "embedding" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to base_lr, then cosine decay to zero at the last step."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


# -- evaluation --------------------------------------------------------------------------------------------
def zero_shot_eval(clip: ClipModel, eval_dir: Path, templates: str, captions: list[str]) -> dict:
    """Top-1 accuracy on an ImageFolder split, split into classes seen in captions and held-out ones."""

    classes = sorted(d.name for d in eval_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    text = "\n".join(captions).lower()
    held_out = {c for c in classes if c.lower() not in text}
    clf = build_classifier(clip, classes, templates, use_cache=False)
    hits = {"seen": [], "held_out": []}
    # No image store: the weights change every epoch while the "training" fingerprint does not.
    for record in classify(clip, clf, [eval_dir], batch_size=256, workers=0, top_k=1, store=False):
        if isinstance(record, Prediction):
            truth = Path(record.path).parent.name
            hits["held_out" if truth in held_out else "seen"].append(record.label == truth)
    result = {f"{k}_acc1": (sum(v) / len(v) if v else None) for k, v in hits.items()}
    result.update(
        seen_images=len(hits["seen"]), held_out_images=len(hits["held_out"]), held_out_classes=sorted(held_out)
    )
    return result


# -- the loop ----------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    show_progress: bool = False,
) -> dict:
    """Run (or resume) training; returns the final metrics. The output directory is loadable after every epoch."""
    out = check_output_dir(cfg.output, "--resume" if resume else "--output")  # before any work
    if not resume and ((out / CHECKPOINT).exists() or (out / "open_clip_config.json").exists()):
        how = f"continue it with --resume {out}, or " if (out / CHECKPOINT).exists() else ""
        raise UsageError(
            f"--output {out}: holds a trained model already; {how}choose another folder (nothing is overwritten)"
        )
    state = None
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise UsageError(f"--resume {out}: no {CHECKPOINT} there to resume from")
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        cfg = TrainConfig(**state["config"])
    model_cfg = _model_cfg(cfg.config)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    precision = "bf16" if cfg.precision == "auto" and device.type == "cuda" else cfg.precision
    precision = "fp32" if precision == "auto" else precision

    csv_path, pairs, missing = read_captions(cfg.data)
    if missing:
        print(f"warning: skipped {missing} captions whose image file is missing", file=sys.stderr)
    model = random_init_model(model_cfg, cfg.seed).to(device)
    preprocess = Preprocess.from_cfg({"size": model.visual.image_size, **PREPROCESS_CFG})
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=model_cfg["text_cfg"].get("context_length", 77))
    dataset = PairDataset(pairs, preprocess, tokenizer)
    steps_per_epoch = len(dataset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise UsageError(f"{csv_path}: {plural(len(dataset), 'pair')} is less than one batch of {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs

    optimizer = torch.optim.AdamW(param_groups(model, cfg.wd), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start_epoch, step, metrics = 0, 0, {}
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, metrics = state["epoch"] + 1, state["step"], state["metrics"]
        torch.set_rng_state(state["torch_rng"])
    eval_dir = Path(cfg.eval_dir) if cfg.eval_dir else csv_path.parent / "eval"
    clip = ClipModel("training", "training", model, preprocess, tokenizer, "training", device, precision)
    out.mkdir(parents=True, exist_ok=True)
    if state:
        _truncate_log(out / LOG, step)
    with (
        open(out / LOG, "a" if state else "w", newline="", encoding="utf-8") as log_file,
        bar("training", total_steps, "step", show_progress) as progress,
    ):
        log = csv.writer(log_file)
        if not state:
            log.writerow(["step", "epoch", "loss", "lr", "logit_scale", "images_per_s", "skipped"])
        if progress:
            progress.update(0, completed=step)
        reported: set[str] = set()
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = epoch_order(len(dataset), cfg.seed, epoch)
            parts = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps_per_epoch)]
            if cfg.workers == 0:
                batches = map(dataset, parts)
            else:
                batches = run_tasks(parts, dataset, workers=cfg.workers, item_timeout=DEFAULT_FILE_TIMEOUT)
            for batch in batches:
                images, tokens, skipped = batch.images, batch.tokens, batch.skipped
                for path, reason in skipped:
                    if path not in reported:  # once per file, not once per epoch
                        reported.add(path)
                        print(f"skipped {path}: {reason}", file=sys.stderr)
                tick = time.perf_counter()
                lr = lr_at(step, cfg.lr, cfg.warmup, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step += 1
                if images is None:
                    continue
                images = torch.from_numpy(preprocess.normalize(images)).to(device)
                tokens = torch.from_numpy(tokens).to(device)
                with clip.autocast():
                    image_features = F.normalize(model.encode_image(images), dim=-1)
                    text_features = F.normalize(model.encode_text(tokens), dim=-1)
                    loss = clip_loss(image_features.float(), text_features.float(), model.logit_scale.exp())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                with torch.no_grad():  # CLIP clamps the temperature so logits never exceed 100x cosine
                    model.logit_scale.clamp_(0, math.log(100))
                rate = len(images) / (time.perf_counter() - tick)
                scale = model.logit_scale.exp().item()
                log.writerow(
                    [step, epoch, f"{loss.item():.6f}", f"{lr:.6g}", f"{scale:.4f}", f"{rate:.1f}", len(skipped)]
                )
                if progress:
                    progress.update(
                        0, advance=1, extra=f"loss {loss.item():.3f} lr {lr:.1e} scale {scale:.1f} {rate:.0f} img/s"
                    )
            log_file.flush()
            metrics = {"epoch": epoch + 1, "step": step, "loss": float(loss.item())}
            if eval_dir.is_dir():
                model.eval()
                metrics.update(zero_shot_eval(clip, eval_dir, cfg.templates, [c for _, c in pairs]))
            with writing(out, "--output"):
                _save(out, model, model_cfg, optimizer, cfg, epoch, step, metrics, csv_path, len(dataset))
            if show_progress or on_epoch_end is None:
                _report(epoch, metrics)
            if on_epoch_end:
                on_epoch_end(epoch, metrics)
    return metrics


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint (a crash mid-epoch), so the resumed log has no duplicates."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)


def _report(epoch: int, metrics: dict) -> None:
    parts = [f"epoch {epoch + 1}: loss {metrics['loss']:.4f}"]
    for key in ("seen_acc1", "held_out_acc1"):
        if metrics.get(key) is not None:
            parts.append(f"{key.replace('_acc1', '')} top-1 {metrics[key]:.1%}")
    print(", ".join(parts), file=sys.stderr)


def _model_cfg(config: str) -> dict:
    path = Path(config)
    if path.is_file():
        try:
            cfg = json.loads(read_text(path, "--config "))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--config {config}: not valid JSON ({exc})") from exc
        cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else cfg
        if not isinstance(cfg, dict):
            raise UsageError(
                f"--config {config}: expected a JSON object (open_clip's model_cfg), found {type(cfg).__name__}"
            )
    else:
        cfg = model_config(config)
        if cfg is None:
            raise UsageError(f"--config {config}: no such file or model config name")
    if "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise UsageError(f"--config {config}: expected open_clip's model_cfg form with vision_cfg and text_cfg")
    return cfg


def _save(out: Path, model, model_cfg, optimizer, cfg: TrainConfig, epoch, step, metrics, csv_path, n_pairs):
    """The loadable model directory and the resume checkpoint, each written atomically."""
    metadata = {
        "templates": cfg.templates,
        "training_command": cfg.command,
        "data": {"captions": str(csv_path), "pairs": n_pairs},
        "hyperparameters": {k: v for k, v in asdict(cfg).items() if k not in ("command",)},
        "metrics": metrics,
    }
    save_model_dir(model, model_cfg, out, preprocess_cfg=PREPROCESS_CFG, metadata=metadata)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": asdict(cfg),
        "epoch": epoch,
        "step": step,
        "metrics": metrics,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic.atomic_open(out / CHECKPOINT, "wb") as f:
        torch.save(state, f)
