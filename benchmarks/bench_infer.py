"""Sliding-window inference throughput (MONAI ``sliding_window_inference``, overlap 0.25, Gaussian
blending, 4 windows per batch) of the fine-tuning segmenters, on a CT-phantom-sized volume
(128 × 128 × 64) and an MNI152-sized volume (197 × 233 × 189):

* the ``cpu-small`` ResUNet (channels 8-128, 32³ windows);
* SwinUNETR feature size 12 (64³ windows).

Each model runs in its own process so its peak memory is its own: peak RSS (CPU) or max allocated
CUDA memory. Prints voxels per second.

    python benchmarks/bench_infer.py [--device auto] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from monai.inferers import sliding_window_inference

from gtgm.models.registry import create_segmenter
from gtgm.runtime import resolve_device

MODELS = {
    "resunet-cpu-small": ("resunet", {"channels": [8, 16, 32, 64, 128]}, [32, 32, 32]),
    "swinunetr-fs12": ("swinunetr", {"feature_size": 12}, [64, 64, 64]),
}
VOLUMES = {"ct-phantom 128x128x64": (128, 128, 64), "mni152 197x233x189": (197, 233, 189)}


def run_one(key: str, device_name: str, repeats: int) -> dict:
    device = resolve_device(device_name)
    name, kw, roi = MODELS[key]
    model = create_segmenter(name, 8, **kw).to(device).eval()
    out = {"model": key, "roi": roi, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "volumes": {}}
    for vol, shape in VOLUMES.items():
        x = torch.randn(1, 1, *shape, device=device)
        with torch.inference_mode():
            sliding_window_inference(x, roi, 4, model, overlap=0.25, mode="gaussian")  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(repeats):
                sliding_window_inference(x, roi, 4, model, overlap=0.25, mode="gaussian").argmax(1)
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / repeats
        out["volumes"][vol] = {"seconds": seconds, "voxels_per_s": x[0, 0].numel() / seconds}
    out["peak_gb"] = (
        torch.cuda.max_memory_allocated() / 1e9
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    )
    out["device"] = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", choices=list(MODELS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.device, args.repeats)))
        return
    for key in MODELS:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", key, "--device", args.device, "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        kind = "peak CUDA allocated" if "CPU" not in res["device"] else "peak RSS"
        print(
            f"{key} ({res['params_m']:.2f} M params, {res['roi']} windows) on {res['device']}: {kind} "
            f"{res['peak_gb']:.2f} GB"
        )
        for vol, r in res["volumes"].items():
            print(f"  {vol}: {r['seconds']:.2f} s = {r['voxels_per_s'] / 1e6:.2f} M voxels/s")


if __name__ == "__main__":
    main()
