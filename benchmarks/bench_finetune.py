"""Cost and yield of the CPU fine-tuning recipe on the CT phantoms (preset ``finetune/cpu-small``).

Runs, in this process and on the same cases (split seed 0, from scratch, all training labels):

* ``recipe``: the preset — phantoms cached at 5.5 mm, 64 × 64 × 32 patches (the whole body in-plane),
  batch 2, 500 steps, lr 0.01 with cosine decay, CE weights ∝ class share^-0.5, affine InstanceNorm;
* ``baseline``: the recipe before it (native ~2.7 × 2.7 × 4.5 mm, 32³ patches, batch 4, 100 steps,
  lr 0.002, no class weights, InstanceNorm without affine, one validation) — what ``make demo`` ran until then.

Prints, per run: training steps/s, wall and CPU seconds (validations included), the validation Dice (on
the run's own grid) against elapsed time (every ``--val-every`` steps for the recipe), and the test Dice per
class and per CPU-minute — both runs scored on the raw held-out phantoms (gtgm predict + gtgm evaluate);
then recipe / baseline ratios. Examples and caches are written to a temporary folder (or ``--work``).

    python benchmarks/bench_finetune.py [--steps N] [--val-every 50] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gtgm.config import load_config
from gtgm.data.datasets import load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.preprocess import preprocess_dataset
from gtgm.infer.evaluate import evaluate_folders
from gtgm.infer.predict import predict_inputs
from gtgm.study.report import class_names
from gtgm.train.finetune import finetune


def caches(work: Path) -> dict[str, Path]:
    """The example corpus, cached as the recipe (CT at 5.5 mm) and as the baseline (native) want it."""
    if not (work / "examples" / "dataset.json").is_file():
        write_examples(work / "examples", progress=False)
    out = {}
    for name, preset, overrides in (
        ("recipe", "finetune/cpu-small", []),
        ("baseline", "finetune/cpu-small", ["preprocess.group_spacing={}"]),
    ):
        cfg = load_config(preset, overrides)
        out[name] = work / f"cache-{name}"
        preprocess_dataset(load_dataset(work / "examples"), out[name], cfg.preprocess, progress=False)
    return out


def run(name: str, cache: Path, work: Path, overrides: list[str]) -> dict:
    """Fine-tune, then score ``best.pt`` as a user would: gtgm predict on the raw test phantoms (native grid),
    gtgm evaluate against their raw label maps — the same grid for both recipes."""
    cfg = load_config(
        "finetune/cpu-small",
        [f"finetune.cache={cache}", "finetune.group=ct_phantom", f"finetune.out={work / name}", *overrides],
    )
    cpu0, t0, start = time.process_time(), time.perf_counter(), time.time()
    finetune(cfg, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    log = [json.loads(line) for line in (work / name / "log.jsonl").read_text().splitlines()]
    names = class_names(cache, "ct_phantom")
    curve = [
        (r["step"], r["time"] - start, float(np.mean([v for k, v in r.items() if k.startswith("val/")])))
        for r in log
        if any(k.startswith("val/") for k in r)
    ]
    rates = [r["samples_per_s"] / cfg.finetune.batch_size for r in log if "samples_per_s" in r]
    ids = [p["id"] for p in json.loads((work / name / "split.json").read_text())["test"]]
    labels = work / name / "test_labels"
    labels.mkdir(exist_ok=True)
    for case in ids:
        shutil.copyfile(work / "examples" / "ct" / f"{case}_label.nii.gz", labels / f"{case}.nii.gz")
    predict_inputs(
        work / name / "best.pt", [work / "examples" / "ct" / f"{c}.nii.gz" for c in ids], work / name / "pred"
    )
    scores = evaluate_folders(work / name / "pred", labels)
    return {
        "steps_per_s": float(np.mean(rates)),
        "wall_s": wall,
        "cpu_s": cpu,
        "curve": curve,
        "test_dice": scores["mean_dice"],
        "per_class": {names.get(k, k): v["dice"] for k, v in scores["mean"].items()},
        "dice_per_cpu_min": scores["mean_dice"] / (cpu / 60),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, help="recipe steps (default: the preset's)")
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--work", type=Path, help="folder for examples, caches and runs (default: a temp folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; work folder {work}")
    paths = caches(work)
    common = ["seed=0", "finetune.split_seed=0", f"finetune.val_every={args.val_every}"]
    results = {
        "recipe": run(
            "recipe", paths["recipe"], work, [*common, *([f"finetune.steps={args.steps}"] * bool(args.steps))]
        ),
        "baseline": run(
            "baseline",
            paths["baseline"],
            work,
            [
                *common,
                "finetune.patch_size=[32,32,32]",
                "finetune.batch_size=4",
                "finetune.steps=100",
                "finetune.lr=0.002",
                "finetune.class_weight_power=0.0",
                "finetune.val_every=100",
                "model.norm_affine=false",
            ],
        ),
    }
    for name, r in results.items():
        print(
            f"\n{name}: {r['steps_per_s']:.2f} steps/s, {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU; "
            f"test mean Dice {r['test_dice']:.3f} ({r['dice_per_cpu_min']:.3f} per CPU-minute)"
        )
        print(
            "  validation mean Dice against elapsed seconds: "
            + ", ".join(f"{t:.0f} s {d:.3f}" for _, t, d in r["curve"])
        )
        print("  test Dice per class: " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_class"].items()))
    rec, base = results["recipe"], results["baseline"]
    print(
        f"\nrecipe / baseline: test Dice x{rec['test_dice'] / max(base['test_dice'], 1e-9):.2f}, "
        f"CPU time x{rec['cpu_s'] / base['cpu_s']:.2f}, Dice per CPU-minute x"
        f"{rec['dice_per_cpu_min'] / max(base['dice_per_cpu_min'], 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
