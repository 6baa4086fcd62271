"""Held-out image->text retrieval: does an image embedding find its own caption among the others?"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gtgm.train.pairs import CaptionPairs


@torch.no_grad()
def retrieval_accuracy(
    model: torch.nn.Module, pairs: CaptionPairs, device: torch.device, batch: int = 8
) -> dict[str, float]:
    """Top-1/top-5 image->text accuracy over the ``n`` held-out patches, with the chance levels.

    Each patch (un-augmented box) is embedded by the encoder + image head, each caption by the text
    head; a hit is a retrieved caption whose text equals the patch's own (duplicate texts count).
    Chance: 1/n (top-1) and min(5, n)/n (top-5) for distinct texts.
    """
    was_training = model.training
    model.eval()
    n = len(pairs)
    images, texts = [], []
    for s in range(0, n, batch):
        idx = range(s, min(n, s + batch))
        images.append(model.encode_image(torch.stack([pairs.patch(k) for k in idx]).to(device)))
        texts.append(model.text_head(torch.stack([pairs.text(k) for k in idx]).to(device)))
    img, txt = F.normalize(torch.cat(images).float(), dim=-1), F.normalize(torch.cat(texts).float(), dim=-1)
    same_text = torch.tensor([[a == b for b in pairs.rows] for a in pairs.rows], device=device)
    ranked = (img @ txt.T).argsort(dim=1, descending=True)
    hits = same_text.gather(1, ranked)
    model.train(was_training)
    k5 = min(5, n)
    return {
        "top1": float(hits[:, 0].float().mean()),
        "top5": float(hits[:, :k5].any(1).float().mean()),
        "n": n,
        "chance_top1": 1 / n,
        "chance_top5": k5 / n,
    }
