"""Run under torchrun: one forward/backward of the GTGM loss with DDP; saves loss and gradients.

python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from gtgm import runtime
from gtgm.config import LossConfig
from gtgm.models.registry import create_encoder
from gtgm.models.vlp import VLPModel
from gtgm.train.losses import GTGMLoss

GLOBAL_BATCH = 4


def make_model() -> VLPModel:
    torch.manual_seed(0)
    return VLPModel(create_encoder("resunet", channels=[4, 8, 16]), text_dim=12, embed_dim=8, hidden_dim=16)


def make_batch(n: int = GLOBAL_BATCH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(n, 1, 16, 16, 16, generator=g),
        torch.randn(n, 1, 16, 16, 16, generator=g),
        torch.randn(n, 12, generator=g),
    )


def main(out: str) -> None:
    torch.set_num_threads(1)
    runtime.setup(torch.device("cpu"))
    r, w = runtime.rank(), runtime.world_size()
    model = make_model()
    net = DistributedDataParallel(model)
    v1, v2, t = make_batch()
    b = GLOBAL_BATCH // w
    part = slice(r * b, (r + 1) * b)
    losses = GTGMLoss(LossConfig(), gather=True)(**net(v1[part], v2[part], t[part]))
    total = sum(losses.values())
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    torch.save(
        {"loss": total.detach(), "terms": {k: v.detach() for k, v in losses.items()}, "grads": grads},
        f"{out}/rank{r}.pt",
    )
    runtime.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
