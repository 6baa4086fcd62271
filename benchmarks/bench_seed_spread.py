"""Seed spread of a fine-tuning regime on validation, before a study's test is read: which regime needs fewer seeds?

    python benchmarks/bench_seed_spread.py CACHE --config study/cpu-text-premise --out DIR \\
        --regimes finetune.slices_per_case=4 finetune.slices_per_case=12 --seeds 0 1 2 3

Per regime (one override, or several joined by ``,``), scratch is fine-tuned with each seed and **no test set**
(``finetune.test_cases=[]``: the sealed phantoms are not read); its best validation score is kept. Printed per regime:
the mean, the SD over seeds, and the paired seeds that would detect +0.05 with 80 % power if a paired difference
spread like two independent runs (SD × √2, :func:`gtgm.study.stats.seeds_needed`) — an upper bound: a pretrained arm
fine-tuned with the same seed is correlated with scratch, which only lowers the spread of the difference. The
baseline is the first regime; the ratio of each regime's SD to it is printed. Runs are reused from ``--out``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from gtgm.config import load_config
from gtgm.fsutil import read_json
from gtgm.schemas import TEST_METRICS
from gtgm.study.stats import seeds_needed
from gtgm.train.finetune import finetune


def regime_scores(cache: str, preset: str, regime: list[str], seeds: list[int], out: Path) -> list[float]:
    """Best validation score of scratch per seed in ``regime`` (runs in ``out/seed<k>``, reused when finished)."""
    scores = []
    for seed in seeds:
        run = out / f"seed{seed}"
        if not (run / "test_metrics.json").is_file():
            over = [f"finetune.cache={cache}", "finetune.test_cases=[]", "finetune.group=ct_phantom", *regime]
            over += ["finetune.label_ratio=0.01", f"finetune.out={run}", f"seed={seed}"]
            finetune(load_config(preset, over), resume=(run / "checkpoints" / "last.pt").is_file(), progress=False)
        scores.append(float(read_json(run / "test_metrics.json", schema=TEST_METRICS)["best_val"]))
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--config", default="study/cpu-text-premise")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--regimes", nargs="+", required=True, help="one override per regime (several: join with ,)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    a = ap.parse_args()
    base_sd = None
    for regime in a.regimes:
        t0 = time.perf_counter()
        name = regime.replace("finetune.", "").replace("=", "").replace(",", "_")
        scores = regime_scores(a.cache, a.config, regime.split(","), a.seeds, a.out / name)
        sd = float(np.std(scores, ddof=1))
        base_sd = sd if base_sd is None else base_sd
        need = seeds_needed(sd * math.sqrt(2), 0.05) if sd > 0 else 2
        print(
            f"{regime}: best val {np.mean(scores):.3f} (seeds {', '.join(f'{s:.3f}' for s in scores)}), SD {sd:.3f} "
            f"({sd / base_sd if base_sd else float('nan'):.2f} x the first regime's); paired seeds for +0.05 at 80 % "
            f"power <= {need}; {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
