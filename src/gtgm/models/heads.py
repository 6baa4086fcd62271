"""Projection heads: Linear -> BN -> ReLU -> Linear -> BN(affine=False), with global-batch BN under DDP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gtgm.runtime import gather_with_grad, is_distributed


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every process's batch (gathered with gradients),
    so that N processes with batch b normalise exactly like one process with batch N·b. Works with
    gloo on CPU, where ``nn.SyncBatchNorm`` does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        full = gather_with_grad(x)
        mean, var = full.mean(0), full.var(0, unbiased=False)
        with torch.no_grad():
            n = full.shape[0]
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
            self.num_batches_tracked += 1
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


class ProjectionHead(nn.Module):
    """(B, in_dim) -> (B, out_dim): Linear -> BN -> ReLU -> Linear -> BN(affine=False) (GTGM heads)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.bn1 = GlobalBatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim, bias=False)
        self.bn2 = GlobalBatchNorm1d(out_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x)))))
