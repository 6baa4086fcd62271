"""Agglomeration throughput: waterz versus the seeded-watershed fallback on the same affinities.

A synthetic EM volume (``gtgm.data.synthetic_em``, 8 × 8 × 40 nm) gives ground-truth neuron ids; its
nearest-neighbour affinities are degraded like a network's output (Gaussian blur σ = 0.5 voxel plus smooth
Gaussian noise, clipped to [0, 1]), and both methods segment those same affinities at
the same thresholds. Prints voxels per second (median of ``--repeats`` runs, wall clock, one thread for
the Python-side work) and the VOI / adapted Rand of the best threshold, so that speed is read beside
quality, and the ratio waterz / fallback.

    python benchmarks/bench_em.py [--shape 192 192 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

from gtgm.data.synthetic_em import make_em_volume
from gtgm.em.affinities import affinities
from gtgm.em.agglomerate import segment
from gtgm.metrics import neuron_scores

THRESHOLDS = [0.2, 0.3, 0.4, 0.5, 0.6]


def degraded_affinities(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ground-truth affinities, blurred (σ = 0.5 voxel) and disturbed by smooth noise (σ = 2 voxels, std 0.1)."""
    aff, _ = affinities(ids)
    rng = np.random.default_rng(seed)
    out = []
    for a in aff:
        noise = ndimage.gaussian_filter(rng.standard_normal(a.shape), 2.0)
        out.append(ndimage.gaussian_filter(a, 0.5) + 0.1 * noise / noise.std())
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[192, 192, 48], help="volume (x, y, z)")
    ap.add_argument("--cells", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    _, ids = make_em_volume(seed=1, shape=tuple(args.shape), n_cells=args.cells)
    ids = ids.astype(np.int64)
    affs = degraded_affinities(ids)
    n = ids.size
    ready = time.perf_counter() - t0
    print(f"volume {args.shape} ({n / 1e6:.2f} M voxels, {len(np.unique(ids))} neurons) ready in {ready:.1f} s")
    rates = {}
    for method in ("waterz", "watershed"):
        for label, thresholds in (("1 threshold", [0.4]), (f"{len(THRESHOLDS)} thresholds", THRESHOLDS)):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                segs = segment(affs, thresholds, method)
                times.append(time.perf_counter() - t)
            sec = statistics.median(times)
            rates[(method, label)] = n / sec
            best = min((neuron_scores(s, ids) for s in segs), key=lambda s: s["voi"])
            print(
                f"{method:<9} {label:<12} {sec:7.3f} s  {n / sec / 1e6:6.2f} M voxels/s   best VOI {best['voi']:.3f} "
                f"(split {best['voi_split']:.3f}, merge {best['voi_merge']:.3f}), adapted Rand {best['arand']:.3f}"
            )
    for label in ("1 threshold", f"{len(THRESHOLDS)} thresholds"):
        ratio = rates[("waterz", label)] / rates[("watershed", label)]
        print(f"waterz / watershed fallback, {label}: {ratio:.2f}x the voxels per second")


if __name__ == "__main__":
    main()
