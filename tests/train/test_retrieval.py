"""Held-out retrieval figures against hand-computed values (a stub model whose embeddings are known)."""

import numpy as np
import pytest
import torch
from torch import nn

from gtgm.train import retrieval


class _Pairs:
    """Patches and captions embedded as one-hot vectors of their text id; ``rows`` are the text ids."""

    def __init__(self, text_ids: list[int], sign: float = 1.0):
        self.rows, self.sign = np.array(text_ids), sign

    def __len__(self) -> int:
        return len(self.rows)

    def patch(self, k: int) -> torch.Tensor:
        return self.sign * torch.eye(8)[self.rows[k]] + 0.01 * k  # small offsets break exact ties among patches

    def text(self, k: int) -> torch.Tensor:
        return torch.eye(8)[self.rows[k]]


class _Identity(nn.Module):
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def text_head(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(autouse=True)
def _no_position_baseline(monkeypatch):
    monkeypatch.setattr(retrieval, "position_baseline", lambda pairs: (0.0, 0.0))


def test_perfect_embeddings_rank_their_own_caption_first():
    r = retrieval.retrieval_accuracy(_Identity(), _Pairs([0, 1, 2, 3, 3]), torch.device("cpu"))
    assert r["top1"] == 1.0 and r["top5"] == 1.0 and r["mean_rank"] == 1.0
    # chance: (n + 1) / (m + 1) per patch whose text m captions carry: three distinct (3.0), two shared (2.0)
    assert r["chance_mean_rank"] == pytest.approx((3 * 3.0 + 2 * 2.0) / 5)
    assert r["chance_top1"] == pytest.approx(1 / 5)


def test_opposite_embeddings_rank_their_own_caption_last():
    r = retrieval.retrieval_accuracy(_Identity(), _Pairs([0, 1, 2, 3, 4, 5], sign=-1.0), torch.device("cpu"))
    assert r["top1"] == 0.0 and r["mean_rank"] == 6.0 and r["chance_mean_rank"] == pytest.approx(3.5)
