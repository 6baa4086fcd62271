"""Process-level helpers: device choice, the torchrun rank/world size, and the DistributedDataParallel process group
(NCCL on GPU, gloo on CPU) with gathering that keeps gradients. The ground floor: losses and models use it."""

from __future__ import annotations

import os
import sys
import threading
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from gtgm.errors import GtgmError

T = TypeVar("T")
_STUCK: list[int] = []  # the rank, once a cleanup could not leave the process group (then no new group here)
_KEPT: list[object] = []  # what keep_until_exit holds until the process ends


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GtgmError(f"device '{name}': expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GtgmError(f"device '{name}' requested but no CUDA GPU is available")
    return device


def to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` moved to ``device``; on the CPU its 5-D (3D convolution) weights are also stored channels-last
    (``torch.channels_last_3d``), which oneDNN's 3D convolutions run faster in: 1.3-1.4x per training step of the
    shipped CPU presets' networks on one or two threads, 1.0-1.3x at inference (``benchmarks/bench_cpu_layout.py``).
    What the network computes is unchanged (up to float rounding), and
    :func:`gtgm.models.checkpoint.save_checkpoint` writes every tensor back in the default order."""
    module = module.to(device)
    if device.type == "cpu":
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() == 5:  # only these have a 3D channels-last order (4-D ones would be refused)
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return module


def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` as set by torchrun (``RANK``, ``WORLD_SIZE``); ``(0, 1)`` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns this process's device.

    Backend: NCCL when the device is CUDA (one GPU per local rank), gloo otherwise.
    """
    if _STUCK:
        raise GtgmError("an earlier run in this process could not leave its process group; start the next run anew")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return device


def cleanup(timeout_s: float = 60.0) -> bool:
    """Leave the process group together, after a run that finished on every rank; ``True`` when it was left.

    A barrier first, so no rank tears its connections down while a peer still uses them. Then
    ``destroy_process_group`` in a helper thread, waited for at most ``timeout_s``: it can hang now and then
    (pytorch/pytorch#75097) after a finished training; such a rank warns and goes on (the ``gtgm``
    command then ends without Python's teardown: :func:`gtgm.cli.entry`), and :func:`setup` refuses a later run in
    this process. Not for the error path: a rank that failed must not wait at a barrier its peers never reach
    (torchrun stops them when it exits).
    """
    if not is_distributed():
        return True
    rank_now = dist.get_rank()  # before leaving: a group half torn down has no rank
    dist.barrier()
    leaving = threading.Thread(target=dist.destroy_process_group, name="gtgm-leave-group", daemon=True)
    leaving.start()
    leaving.join(timeout_s)
    if leaving.is_alive():
        _STUCK.append(rank_now)
        print(
            f"gtgm: warning: rank {rank_now} could not leave the process group in {timeout_s:.0f} s "
            "(a PyTorch hang, pytorch/pytorch#75097); training is done, the run goes on",
            file=sys.stderr,
        )
        return False
    return True


def keep_until_exit(obj: T) -> T:
    """Under torchrun (``WORLD_SIZE`` > 1), hold ``obj`` (a DistributedDataParallel wrapper, a trainer holding one)
    until the process ends; returns it.

    Their destructors (DDP's gradient reducer, gloo's pending work) may hang once the process group is gone: the
    stack of a torchrun rank that hung in a fresh-clone test run (the hang CI had seen) stood at ``pretrain()``'s
    return with no deeper Python frame, after every output was written and with the other rank gone. Held here they
    never run: :func:`gtgm.cli.entry` ends a torchrun worker without Python's teardown."""
    if dist_env()[1] > 1:
        _KEPT.append(obj)
    return obj


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, keeping gradients to each slice.

    The backward pass sums the gradients every process computed for a slice, so a loss that each of N
    processes computes on the gathered batch, combined with DDP's gradient averaging, gives the
    gradient of that loss on the global batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_reduce_mean(value: float) -> float:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()
