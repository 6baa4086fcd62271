"""Two-view pretraining batches per second: gtgm's memory-mapped cache versus loading the NIfTI and
cropping on every sample (MONAI ``LoadImage`` + ``Orientation`` + normalisation + ``RandSpatialCrop``).

Both arms draw the same number of batches of the same patch size from the same NIfTI cases of the
example corpus (MRI + CT), apply the same two-view augmentation and collate with the same DataLoader
settings, in one process. Prints both throughputs and their ratio (target >= 5x).

    python benchmarks/bench_data.py [--batches 20] [--batch-size 2] [--patch 48] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai import transforms as T
from torch.utils.data import DataLoader, Dataset

from gtgm.config import AugmentConfig, PreprocessConfig
from gtgm.data.augment import TwoViews
from gtgm.data.datasets import load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.patches import TwoViewPatchDataset, VolumeCache
from gtgm.data.preprocess import preprocess_dataset


class MonaiLoadCrop(Dataset):
    """Baseline: every sample loads its NIfTI, reorients, normalises and random-crops (MONAI)."""

    def __init__(self, cases, size: int, augment: AugmentConfig, samples: int, ct_window: list[float]):
        self.cases, self.samples, self.views = cases, samples, TwoViews(augment)
        self.load = T.Compose(
            [
                T.LoadImage(image_only=True, ensure_channel_first=True),
                T.Orientation("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            ]
        )
        self.ct = T.ScaleIntensityRange(ct_window[0], ct_window[1], 0.0, 1.0, clip=True)
        self.mri = T.NormalizeIntensity(nonzero=True)
        self.crop = T.Compose([T.SpatialPad([size] * 3), T.RandSpatialCrop([size] * 3, random_size=False)])

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([0, i])
        case = self.cases[int(rng.integers(len(self.cases)))]
        img = self.load(str(case.images[0].path))
        if case.images[0].channel is not None and img.shape[0] > 1:
            img = img[case.images[0].channel : case.images[0].channel + 1]
        img = self.ct(img) if case.modality == "CT" else self.mri(img)
        self.crop.set_random_state(int(rng.integers(2**31)))
        patch = torch.as_tensor(np.asarray(self.crop(img)), dtype=torch.float32)
        v1, v2, _ = self.views(patch, rng)
        return {"view1": v1, "view2": v2}


def throughput(dataset: Dataset, batches: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0, shuffle=False)
    it = iter(loader)
    next(it)  # warm-up (first file opens, allocator)
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        assert batch["view1"].shape[0] == batch_size
    return batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--workdir", type=Path, help="reuse/keep the corpus and cache here (default: temp)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gtgm-bench-"))
    if not (work / "examples" / "dataset.json").exists():
        write_examples(work / "examples", progress=False)
    dataset = load_dataset(work / "examples")
    cases = [c for c in dataset.cases if c.modality in ("CT", "MRI")]
    dataset.cases = cases
    cfg = PreprocessConfig()
    t0 = time.perf_counter()
    preprocess_dataset(dataset, work / "cache", cfg, progress=False)
    prep = time.perf_counter() - t0
    samples = (args.batches + 1) * args.batch_size
    ours = TwoViewPatchDataset(VolumeCache(work / "cache"), [args.patch] * 3, AugmentConfig(), samples, seed=0)
    base = MonaiLoadCrop(cases, args.patch, AugmentConfig(), samples, cfg.ct_window)
    t_ours = throughput(ours, args.batches, args.batch_size)
    t_base = throughput(base, args.batches, args.batch_size)
    print(
        f"cases: {len(cases)} NIfTI volumes (MRI + CT), patch {args.patch}^3, batch {args.batch_size}, "
        f"{args.batches} batches, 1 thread, num_workers=0"
    )
    print(f"one-off preprocessing of the cache: {prep:.1f} s")
    print(f"gtgm cache (memmap crop + two views):       {t_ours:8.2f} batches/s")
    print(f"MONAI LoadImage + crop per sample (+ views): {t_base:8.2f} batches/s")
    print(f"ratio: {t_ours / t_base:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
