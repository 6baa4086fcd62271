"""Held-out image->text retrieval: does an image embedding find its own caption among the others?"""

from __future__ import annotations

import numpy as np
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
    Chance: 1/n (top-1) and min(5, n)/n (top-5) for distinct texts. ``mean_rank``: the mean over patches of the
    1-based rank of the first caption with the patch's own text; its chance level ``chance_mean_rank`` is the mean
    of (n + 1) / (m_i + 1) for a patch whose text m_i captions carry (a random order puts the first of m_i
    matches there on average; (n + 1) / 2 for distinct texts). It uses every patch's whole ranking, so it moves
    less with the draw of a few held-out boxes than top-k does.
    ``position_top1/5``: what knowing only where each box is achieves (:func:`position_baseline`): the bar an
    encoder must pass before its retrieval says anything about the captions' content beyond modality and position.
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
    first = hits.float().argmax(1) + 1  # 1-based rank of the first own-text caption (its own is always there)
    model.train(was_training)
    k5 = min(5, n)
    base = position_baseline(pairs)
    return {
        "top1": float(hits[:, 0].float().mean()),
        "top5": float(hits[:, :k5].any(1).float().mean()),
        "n": n,
        "chance_top1": 1 / n,
        "chance_top5": k5 / n,
        "mean_rank": float(first.float().mean()),
        "chance_mean_rank": float(((n + 1) / (same_text.sum(1).float() + 1)).mean()),
        "position_top1": base[0],
        "position_top5": base[1],
    }


def position_baseline(pairs: CaptionPairs, repeats: int = 200, seed: int = 0) -> tuple[float, float]:
    """Expected top-1 / top-5 of retrieval from metadata alone: box i ranks caption j first when j's box has the
    same modality and the same stated place (the location words ``describe`` writes: left / midline / right,
    posterior / mid / anterior, inferior / mid-level / superior, central / peripheral; EM: radial part and first
    section), then same modality, then the rest; ties are broken at random, averaged over ``repeats`` draws."""
    from types import SimpleNamespace

    from gtgm.data.measure import position

    keys = []
    for r, c in zip(pairs.records, pairs.case):
        modality = pairs.cache.entries[int(c)]["modality"]
        box = SimpleNamespace(start=r["start"], size=r["size"], volume_shape=pairs.cache.shape(int(c)))
        p = position(box)
        keys.append(
            (modality, p["radial"], r["start"][2])
            if modality == "EM"
            else (modality, p["lr"], p["ap"], p["si"], p["radial"])
        )
    modality = np.array([k[0] for k in keys])
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    place = np.array([ids[k] for k in keys], dtype=int)
    cost = (place[:, None] != place[None, :]).astype(float) + (modality[:, None] != modality[None, :])
    same = np.asarray(pairs.rows)[:, None] == np.asarray(pairs.rows)[None, :]
    n = len(keys)
    rng, k5, top1, top5 = np.random.default_rng(seed), min(5, n), 0.0, 0.0
    for _ in range(repeats):
        order = np.argsort(cost + rng.random(cost.shape) * 0.5, axis=1)
        hits = np.take_along_axis(same, order, axis=1)
        top1, top5 = top1 + hits[:, 0].mean(), top5 + hits[:, :k5].any(1).mean()
    return float(top1 / repeats), float(top5 / repeats)
