"""The demo's CT-phantom fine-tuning, arm by arm and seed by seed, scored on fresh phantoms no run has seen.

    python benchmarks/bench_phantom_select.py --demo runs/demo --work runs/phantom_select \
        --seeds 0 1 2 --arm base --arm uniform finetune.fg_position=uniform

``--demo`` is a finished ``make demo`` output (its cache and pretrained encoder are reused). Every fine-tuning run
scores its split's test phantoms in its own ``test_metrics.json``, as all runs do; nothing here reads or prints them.
Each ``--arm NAME [key=value ...]`` fine-tunes the demo's ``ct_phantom`` run (config
``study/ct_phantom/pretrained/ratio1_seed0/config.yaml`` of the demo, plus the arm's overrides and ``seed=S``) for every
seed, then predicts ``--fresh`` new phantoms (generator seeds 7000 + i: the examples use 1000+, 3000+ and 4000+) on
their raw grid with ``gtgm predict`` and scores them with ``gtgm evaluate``. Printed per run: the best validation
score, mean Dice and each class's mean HD95 (mm) on the fresh phantoms, and the worst class HD95; finished runs are
reused (results in WORK/results.json).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from gtgm.config import load_config
from gtgm.data.io import write_nifti
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.fsutil import read_json, write_json
from gtgm.infer.evaluate import evaluate_folders
from gtgm.infer.predict import predict_inputs
from gtgm.train.finetune import finetune

FRESH_SEED = 7000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, required=True, help="a finished make-demo output folder")
    ap.add_argument("--work", type=Path, default=Path("runs/phantom_select"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fresh", type=int, default=5, help="how many fresh phantoms to score on")
    ap.add_argument("--arm", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE]")
    args = ap.parse_args()
    demo, work = args.demo.resolve(), args.work.resolve()
    fresh = _fresh_phantoms(work / "fresh", args.fresh)
    results_path = work / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}
    for name, *overrides in args.arm:
        for seed in args.seeds:
            key = f"{name}_s{seed}"
            results[key] = _run(demo, work / "runs" / key, [*overrides, f"seed={seed}"], fresh)
            write_json(results_path, results)
            _print_row(key, results[key])


def _fresh_phantoms(folder: Path, n: int) -> Path:
    """``n`` labelled phantoms of generator seeds 7000 + i as ``folder/images`` and ``folder/labels`` (NIfTI)."""
    if not (folder / "labels" / f"fresh_{n - 1:03d}.nii.gz").is_file():
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            hu, lab, affine = make_ct_phantom(seed=FRESH_SEED + i)
            write_nifti(folder / "images" / f"fresh_{i:03d}.nii.gz", hu, affine)
            write_nifti(folder / "labels" / f"fresh_{i:03d}.nii.gz", lab, affine)
    return folder


def _run(demo: Path, run: Path, overrides: list[str], fresh: Path) -> dict:
    """Fine-tune (reused when finished), predict the fresh phantoms, score them: a dict of the figures."""
    base = demo / "study" / "ct_phantom" / "pretrained" / "ratio1_seed0" / "config.yaml"
    paths = [f"finetune.cache={demo / 'cache'}", f"finetune.pretrained={demo / 'pretrain' / 'encoder.pt'}"]
    cfg = load_config(base, [*paths, f"finetune.out={run}", *overrides])
    if not (run / "test_metrics.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        finetune(cfg, progress=False)
        (run / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    pred = run / "fresh"
    shutil.rmtree(pred, ignore_errors=True)
    predict_inputs(run / "best.pt", [fresh / "images"], pred, "cpu")
    scores = evaluate_folders(pred, fresh / "labels", classes=sorted(k for k in CT_LABELS if k))
    best_val = read_json(run / "test_metrics.json")["best_val"]
    return {
        "overrides": overrides,
        "wall_s": float((run / "wall_s.txt").read_text()),
        "best_val": best_val,
        "dice": {CT_LABELS[int(k)]: v["dice"] for k, v in scores["mean"].items()},
        "hd95": {CT_LABELS[int(k)]: v["hd95"] for k, v in scores["mean"].items()},
        "hd95_max_case": float(np.nanmax([r["hd95"] for r in scores["rows"]])),
    }


def _print_row(key: str, r: dict) -> None:
    hd = " ".join(f"{k} {v:.1f}" for k, v in r["hd95"].items())
    print(
        f"{key}: val {r['best_val']:.3f}, fresh Dice {np.mean(list(r['dice'].values())):.3f} "
        f"(spleen {r['dice']['spleen']:.3f}), HD95 {hd}, worst case {r['hd95_max_case']:.1f} mm, {r['wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
