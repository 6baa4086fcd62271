"""CPU training and inference steps with 3D-convolution weights in channels-last order (``gtgm.runtime.to_device``)
versus the default order (``module.to("cpu")``), in one process, same seeds, interleaved repeats.

Networks, built from the shipped presets:
- the demo's pretraining encoder + heads (``pretrain/cpu-small``: two views of 8 patches of 32³, CLIP-sized heads);
- the real-CT segmenter (``finetune/cpu-real-ct``: ResUNet 8-128, two CT windows, batch 2 of 48 x 48 x 32);
- the same segmenter at inference (no gradient, a sliding-window batch of 4 patches).

A training step is forward + backward + AdamW. Prints the median seconds per step of each layout and their ratio.

    python benchmarks/bench_cpu_layout.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gtgm.config import load_config
from gtgm.models.registry import architecture_kwargs, create_segmenter
from gtgm.models.vlp import build_model
from gtgm.runtime import to_device

CPU = torch.device("cpu")


def _cases() -> dict[str, tuple]:
    """name -> (build the module, make its input, train?)."""
    pre = load_config("pretrain/cpu-small").model
    seg = load_config("finetune/cpu-real-ct").model
    seg.ct_source_window = [-1000.0, 1000.0]  # the window the cache normalised the CT with (set from it in fine-tuning)
    kw = architecture_kwargs(seg)
    return {
        "pretrain encoder (cpu-small, 16 x 32³)": (
            lambda: build_model(pre, 384).encoder,
            lambda: torch.randn(16, 1, 32, 32, 32),
            True,
        ),
        "real-CT segmenter, train (2 x 48x48x32)": (
            lambda: create_segmenter(seg.encoder, 12, **kw),
            lambda: torch.rand(2, 1, 48, 48, 32),
            True,
        ),
        "real-CT segmenter, inference (4 x 48x48x32)": (
            lambda: create_segmenter(seg.encoder, 12, **kw),
            lambda: torch.rand(4, 1, 48, 48, 32),
            False,
        ),
    }


def _stepper(build, make_input, train: bool, channels_last: bool):
    """A function that runs one step of the network in one layout and returns its seconds."""
    torch.manual_seed(0)
    net = to_device(build(), CPU) if channels_last else build().to(CPU)
    x = make_input()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train(train)

    def step() -> float:
        t0 = time.perf_counter()
        if train:
            out = net(x)
            out = out if isinstance(out, torch.Tensor) else out[0]
            out.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                net(x)
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} steps after one warm-up")
    print(f"{'network':46s} {'default s':>10s} {'channels-last s':>16s} {'speed-up':>9s}")
    for name, (build, make_input, train) in _cases().items():
        steps = {layout: _stepper(build, make_input, train, layout) for layout in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for k in range(args.repeats + 1):
            for layout in (False, True):  # interleaved, so drift in the machine's speed hits both
                t = steps[layout]()
                if k:  # the first step of each is a warm-up
                    times[layout].append(t)
        base, fast = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:46s} {base:10.3f} {fast:16.3f} {base / fast:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
