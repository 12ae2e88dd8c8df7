"""Image-text retrieval recall@K on a captions CSV, with CLIP_benchmark's definitions.

Data: `filepath,caption` rows (open_clip's CsvDataset layout, what `zsclip data shapes` writes), several rows
per image allowed, paths relative to the CSV. Metrics as clip_benchmark.metrics.zeroshot_retrieval.evaluate:
  image_retrieval_recall@K  text -> image: a caption scores 1 when its own image is among the top K images;
                            averaged over captions.
  text_retrieval_recall@K   image -> text: an image scores 1 when at least one of its captions is among the top
                            K captions; averaged over images.
Top K by torch.topk over caption x image cosine similarities, as there (so ties fall the same way). A K larger
than the number of candidates counts every candidate (CLIP_benchmark would fail). Images that cannot be read are
dropped with their captions and reported. Image vectors come from the image store, caption vectors from the text
cache, like everything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.datasets import CaptionData, load_captions
from zsclip.engines import ReadOptions, Runtime, embed_stream
from zsclip.models import ClipModel
from zsclip.retrieval.search import text_vectors
from zsclip.store.cache import Cache

DEFAULT_RECALL_K = (1, 5, 10)
_CHUNK = 1024  # queries scored at once


@dataclass
class RetrievalResult:
    data: CaptionData
    images: list[str]  # images scored (readable ones)
    captions: list[str]  # captions scored (of readable images)
    caption_image: np.ndarray  # [captions] index into images
    metrics: dict[str, float]
    text_ranks: np.ndarray  # [captions] rank (1 = best) of the caption's own image among all images
    text_top: np.ndarray  # [captions] the best-scoring image
    image_ranks: np.ndarray  # [images] rank of the image's best-placed own caption among all captions
    image_top: np.ndarray  # [images] the best-scoring caption
    recall_k: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0


def recall_metrics(images_emb, texts_emb, caption_image: np.ndarray, recall_k: Sequence[int]) -> dict[str, float]:
    """CLIP_benchmark's recall@K (see the module docstring); embeddings are unit-norm torch tensors."""
    import torch

    owner = torch.as_tensor(np.asarray(caption_image), dtype=torch.long)
    metrics = {}
    for k in recall_k:
        hits_t = []  # text -> image
        for start in range(0, len(texts_emb), _CHUNK):
            scores = texts_emb[start : start + _CHUNK] @ images_emb.T
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices
            hits_t.append((top == owner[start : start + _CHUNK, None]).any(dim=1))
        hits_i = []  # image -> text
        for start in range(0, len(images_emb), _CHUNK):
            scores = images_emb[start : start + _CHUNK] @ texts_emb.T
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices
            rows = torch.arange(start, start + len(scores))[:, None]
            hits_i.append((owner[top] == rows).any(dim=1))
        metrics[f"image_retrieval_recall@{k}"] = torch.cat(hits_t).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = torch.cat(hits_i).float().mean().item()
    return metrics


def first_ranks(images_emb, texts_emb, caption_image: np.ndarray):
    """(text_ranks, text_top, image_ranks, image_top): per query, the rank of the first correct item, counted as
    1 + the number of candidates scoring strictly higher, and the best candidate."""
    import torch

    owner = torch.as_tensor(np.asarray(caption_image), dtype=torch.long)
    t_rank, t_top, i_rank, i_top = [], [], [], []
    for start in range(0, len(texts_emb), _CHUNK):
        scores = texts_emb[start : start + _CHUNK] @ images_emb.T
        own = scores.gather(1, owner[start : start + _CHUNK, None])
        t_rank.append((scores > own).sum(dim=1) + 1)
        t_top.append(scores.argmax(dim=1))
    for start in range(0, len(images_emb), _CHUNK):
        scores = images_emb[start : start + _CHUNK] @ texts_emb.T
        mine = owner[None, :] == torch.arange(start, start + len(scores))[:, None]
        best_own = scores.masked_fill(~mine, float("-inf")).max(dim=1, keepdim=True).values
        i_rank.append((scores > best_own).sum(dim=1) + 1)
        i_top.append(scores.argmax(dim=1))
    return tuple(torch.cat(x).numpy() for x in (t_rank, t_top, i_rank, i_top))


def check_recall_k(recall_k: Sequence[int]) -> list[int]:
    ks = list(dict.fromkeys(int(k) for k in recall_k))
    if not ks or any(k < 1 for k in ks):
        raise UsageError(f"--recall-k {','.join(map(str, recall_k))}: give positive integers such as 1,5,10")
    return ks


def evaluate_retrieval(
    model: ClipModel,
    data: str | os.PathLike | CaptionData,
    recall_k: Sequence[int] = DEFAULT_RECALL_K,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    *,
    cache: Cache | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> RetrievalResult:
    """Recall@K both ways on a captions data set, its images read as `read` says (the cache: `cache`)."""
    import torch

    ks = check_recall_k(recall_k)
    if not isinstance(data, CaptionData):
        data = load_captions(data)
    cache = cache or (read.cache if read is not None else None) or Cache()
    feats: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    reused = 0
    read = (read or ReadOptions()).but(cache=cache)
    for batch in embed_stream(model, [(p, True) for p in data.images], read, runtime):
        skipped += batch.skipped
        reused += batch.reused
        if batch.features is not None:
            feats.update(zip(batch.paths, batch.features, strict=True))
        if on_batch:
            on_batch(len(batch.paths), len(batch.skipped))
    images = [p for p in data.images if p in feats]
    if not images:
        raise ZsclipError(f"{data.source}: no image could be read ({len(skipped)} skipped)")
    new_index = {old: new for new, old in enumerate(i for i, p in enumerate(data.images) if p in feats)}
    keep = [j for j, i in enumerate(data.caption_image) if i in new_index]
    captions = [data.captions[j] for j in keep]
    owner = np.array([new_index[data.caption_image[j]] for j in keep], dtype=np.int64)
    images_emb = torch.from_numpy(np.stack([feats[p] for p in images])).float()
    texts_emb = torch.from_numpy(text_vectors(model, captions, None, cache)).float()
    metrics = recall_metrics(images_emb, texts_emb, owner, ks)
    t_rank, t_top, i_rank, i_top = first_ranks(images_emb, texts_emb, owner)
    return RetrievalResult(data, images, captions, owner, metrics, t_rank, t_top, i_rank, i_top, ks, skipped, reused)


def summary_dict(result: RetrievalResult, model: ClipModel) -> dict:
    return {
        **model.computed_by(),
        "task": "retrieval",
        "dataset": result.data.name,
        "dataset_source": result.data.source,
        "images": len(result.images),
        "captions": len(result.captions),
        "skipped": len(result.skipped),
        "recall_k": result.recall_k,
        "metrics": result.metrics,
    }
