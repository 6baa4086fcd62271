"""Real-CT organ segmentation on 2 CPU cores: the cpu-real-ct recipe on `real_ct_organs` (silver labels).

    python benchmarks/bench_real_ct.py --work runs/real_ct --attribution [--steps 0 1 ...] [key=value ...]
    python benchmarks/bench_real_ct.py --work runs/real_ct --select [--fold A] [key=value ...]
    python benchmarks/bench_real_ct.py --work runs/real_ct --final A|B|z [key=value ...]
    python benchmarks/bench_real_ct.py --work runs/real_ct --pair BASE ARM

1. ``gtgm data fetch-real`` into WORK/data (reused when there), ``gtgm data preprocess`` into WORK/cache;
2. ``--attribution``: the old recipe, then the issue's items added one at a time
   (:data:`gtgm.study.real_ct.ATTRIBUTION`), each a selection run on fold A: the table of validation Dice (classes the
   validation volume holds) and wall time;
3. ``--select``: one selection run of the preset on a fold, its validation Dice at every ``val_every`` steps;
   steps 2 and 3 name no test case, so no test volume is ever read;
4. ``--final``: a fold's final run (:data:`gtgm.study.real_ct.FOLDS`): wall time, validation, then the Dice at the
   native grid (``gtgm predict`` + ``gtgm evaluate``) of each training volume (its fit; partial-label crops on the
   classes they annotate), and of the test volume (fold z: its lower part, on the 5 mm grid).
``--pair BASE ARM`` runs nothing: it pairs the selection runs named ``BASE_s<seed>`` and ``ARM_s<seed>`` in
WORK/results.json seed by seed (run each as ``--select --name BASE_s<seed> seed=<seed>``)
(:func:`gtgm.study.real_ct.paired_selection`): best and last-three validation Dice, their mean difference with a 95
% t-interval, and the paired seeds that would detect +0.05.
``--phantoms N`` adds N CT phantoms to the training cases as partial-label cases (liver, spleen, kidneys, aorta,
lungs; :mod:`gtgm.data.phantom_mix`), in a copy of the data (WORK/data_phN, cache WORK/cache_phN);
``--phantom-classes C ...`` makes them annotate only the classes C (the others' voxels are ignored by the loss).
``--select --fit`` also scores the run's fit of each real training volume at its native grid (never a test volume);
with ``--last``, of its last checkpoint instead of the one validation kept.
The labels are TotalSegmentator's own output ("silver"), so the figures measure agreement with that model. Finished
runs are reused (delete WORK/runs/<name> to redo one); results go to WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from gtgm.config import load_config
from gtgm.data.datasets import load_dataset
from gtgm.data.phantom_mix import PREFIX, add_phantoms
from gtgm.data.preprocess import preprocess_dataset
from gtgm.data.real import fetch_real
from gtgm.fsutil import read_json, write_json
from gtgm.infer.body import outside_body
from gtgm.infer.evaluate import evaluate_folders
from gtgm.infer.predict import predict_inputs
from gtgm.models.checkpoint import load_checkpoint, save_checkpoint
from gtgm.study.real_ct import (
    ATTRIBUTION,
    FOLDS,
    PRESET,
    attribution_overrides,
    held_classes,
    paired_selection,
    selection,
    with_training,
)
from gtgm.train.finetune import finetune

GROUP = "real_ct_organs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench_real_ct"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="download cache of the archives")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--attribution", action="store_true", help="the attribution table (validation only)")
    mode.add_argument("--select", action="store_true", help="a selection run (validation only)")
    mode.add_argument("--final", dest="final", choices=sorted(FOLDS), help="a fold's final run (reads its test)")
    mode.add_argument("--pair", nargs=2, metavar=("BASE", "ARM"), help="pair finished selection runs by seed")
    ap.add_argument("--fold", choices=["A", "B"], default="A", help="--select: the fold")
    ap.add_argument("--steps", type=int, nargs="*", default=None, help="--attribution: which steps (default all)")
    ap.add_argument("--name", default="", help="the run's name under WORK/runs (default: the mode and fold)")
    ap.add_argument("--phantoms", type=int, default=0, help="CT phantoms added as partial-label training cases")
    ap.add_argument(
        "--phantom-classes", nargs="+", default=None, help="the classes the phantoms annotate (default all they map)"
    )
    ap.add_argument("--fit", action="store_true", help="--select: also each real training volume's native-grid fit")
    ap.add_argument("--last", action="store_true", help="--fit: score the last checkpoint, not the kept one")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    if args.pair:
        if not (args.work / "results.json").is_file():
            ap.error(f"--pair: no {args.work / 'results.json'} (run the selection runs first)")
        _print_pair(paired_selection(read_json(args.work / "results.json"), *args.pair), *args.pair)
        return
    data, cache = args.work / "data", args.work / "cache"
    if not (data / "dataset.json").is_file():
        fetch_real(data, args.cache_dir)
    if args.phantoms:
        if args.final == "z":
            ap.error("--phantoms: fold z splits every training volume into slabs, and partial-label cases only train")
        data = _with_phantoms(data, args.work, args.phantoms, args.phantom_classes)
        cache = args.work / data.name.replace("data_", "cache_", 1)
    elif args.phantom_classes:
        ap.error("--phantom-classes: only with --phantoms N")
    dataset = json.loads((data / "dataset.json").read_text())
    extra = [e["id"] for e in dataset["training"] if e["id"].startswith(PREFIX)]
    t0 = time.perf_counter()
    preprocess_dataset(load_dataset(data), cache, load_config(PRESET, args.overrides).preprocess, progress=False)
    print(f"preprocess: {time.perf_counter() - t0:.0f} s")
    ph = data.name.removeprefix("data") if args.phantoms else ""  # default run names: the phantoms' runs apart
    results_path = args.work / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}
    if args.attribution:
        for step in args.steps if args.steps is not None else range(len(ATTRIBUTION)):
            name = f"{args.name or 'attribution' + ph}{step}"
            overrides = with_training(attribution_overrides(step), extra) + args.overrides
            results[name] = _run(args.work, cache, name, overrides, dataset)
            results[name]["step"] = ATTRIBUTION[step][0]
            write_json(results_path, results)
        _print_attribution(results)
    elif args.select:
        name = args.name or f"select_{args.fold}{ph}"
        earlier = {k: v for k, v in results.get(name, {}).items() if k.startswith("fit ")}  # kept: fits of the run
        results[name] = earlier | _run(
            args.work, cache, name, with_training(selection(args.fold), extra) + args.overrides, dataset
        )
        for row in results[name]["curve"]:
            print(f"step {row['step']}: val mean {row['mean']:.3f} " + _fmt(row["dice"]))
        if args.fit:
            fits = _fits(args.work, name, data, dataset, last=args.last)
            results[name].update({f"{k} (last)": v for k, v in fits.items()} if args.last else fits)
        write_json(results_path, results)
    else:
        name = args.name or f"fold_{args.final}{ph}"
        overrides = with_training(FOLDS[args.final], extra) + args.overrides
        results[name] = _final(args.work, cache, name, overrides, dataset, data)
        write_json(results_path, results)


def _with_phantoms(data: Path, work: Path, n: int, classes: list[str] | None) -> Path:
    """WORK/data_phN (WORK/data_phN_<classes joined by '+'> when they annotate only ``classes``): a copy of ``data``
    with ``n`` phantoms added (made once, in a temporary folder renamed at the end, so an interrupted copy is never
    taken for a finished one)."""
    mixed = work / (f"data_ph{n}" + (f"_{'+'.join(classes)}" if classes else ""))
    if not (mixed / "dataset.json").is_file():
        tmp = mixed.with_name(mixed.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(data, tmp)
        add_phantoms(tmp, GROUP, n, classes=classes)
        shutil.rmtree(mixed, ignore_errors=True)
        tmp.rename(mixed)
    return mixed


def _run(work: Path, cache: Path, name: str, overrides: list[str], dataset: dict) -> dict:
    """One fine-tuning run (reused when finished): wall time, its validation curve and best validation Dice on
    the classes its validation volume holds."""
    run = work / "runs" / name
    cfg = load_config(PRESET, [f"finetune.cache={cache}", f"finetune.out={run}", *overrides])
    if not (run / "test_metrics.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        finetune(cfg, progress=False)
        (run / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    names = held_classes(dataset, GROUP, cfg.finetune.val_cases) if cfg.finetune.val_cases else {}
    curve = []
    for row in (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()):
        dice = {v: row[f"val/{k}"] for k, v in names.items() if f"val/{k}" in row}
        if dice:
            curve.append({"step": row["step"], "mean": sum(dice.values()) / len(dice), "dice": dice})
    best = max(curve, key=lambda r: r["mean"]) if curve else None
    out = {"overrides": overrides, "wall_s": float((run / "wall_s.txt").read_text()), "curve": curve, "best": best}
    print(f"{name}: {out['wall_s']:.0f} s" + (f", best val {best['mean']:.3f} at step {best['step']}" if best else ""))
    return out


def _final(work: Path, cache: Path, name: str, overrides: list[str], dataset: dict, data: Path) -> dict:
    """A fold's final run: :func:`_run`, then each training volume's fit and the test volume at the native grid."""
    out = _run(work, cache, name, overrides, dataset)
    run = work / "runs" / name
    metrics = read_json(run / "test_metrics.json")
    if metrics["test"] and any(o.startswith("finetune.split=region") for o in overrides):  # fold z: the 5 mm grid
        names = dataset["groups"][GROUP]["labels"]
        held = [k for k, n in enumerate(np.asarray(metrics["test"]["cases"][0]["confusion"]).sum(1)) if k and n]
        test = {names[str(k)]: metrics["test"]["dice"][str(k)] for k in held}  # classes the test part holds
        out["test"] = {"grid": "5 mm cache", "dice": test, "mean": sum(test.values()) / len(test)}
        print(f"test (lower part, 5 mm grid): mean {out['test']['mean']:.3f} " + _fmt(test))
        return out
    test_ids = [c["case"] for c in metrics["test"]["cases"]] if metrics["test"] else []
    return {**out, **_fits(work, name, data, dataset, test_ids)}


def _fits(work: Path, name: str, data: Path, dataset: dict, test_ids: list[str] = (), last: bool = False) -> dict:
    """Run ``name``'s Dice at the native grid of each real training volume (its fit; partial-label crops on the
    classes they annotate) and of ``test_ids``, with its predicted voxels outside the body. ``last``: the run's last
    weights (``checkpoints/last.pt``) with its kept model's settings, instead of the kept model."""
    run = work / "runs" / name
    model = run / "best.pt"
    if last:
        state = load_checkpoint(run / "checkpoints" / "last.pt", keys=("model", "step"))
        model = save_checkpoint(
            run / "last_model.pt", {**load_checkpoint(model), "model": state["model"], "step": state["step"]}
        )
    fits = [c for c in read_json(run / "test_metrics.json")["train_cases"] if not c.startswith(PREFIX)]
    out = {}
    for what, case in [*((f"fit {c}", c) for c in fits), *(("test", c) for c in test_ids)]:
        pred = work / "predictions" / (name + ("_last" if last else "")) / case
        dice = _native(model, data, [case], pred, dataset)
        outside, total = outside_body(pred / f"{case}.nii.gz", data / GROUP / f"{case}.nii.gz")
        out[what] = {"dice": dice, "mean": sum(dice.values()) / len(dice), "outside_body": [outside, total]}
        print(f"{what} at the native grid (classes it holds): mean {out[what]['mean']:.3f} " + _fmt(dice))
        print(f"    predicted voxels outside the body: {outside} of {total}")
    return out


def _native(best: Path, data: Path, ids: list[str], pred: Path, dataset: dict) -> dict[str, float]:
    """Predict the raw volumes ``ids`` with ``best`` into ``pred``; mean Dice of each class they hold."""
    shutil.rmtree(pred, ignore_errors=True)
    (pred / "labels").mkdir(parents=True)
    for case in ids:
        shutil.copyfile(data / GROUP / f"{case}_label.nii.gz", pred / "labels" / f"{case}.nii.gz")
    predict_inputs(best, [data / GROUP / f"{case}.nii.gz" for case in ids], pred, "cpu")
    names = held_classes(dataset, GROUP, ids)
    scores = evaluate_folders(pred, pred / "labels", classes=[int(k) for k in names])
    return {names[str(k)]: float(v["dice"]) for k, v in scores["mean"].items() if str(k) in names}


def _print_attribution(results: dict) -> None:
    rows = [results[k] for k in sorted(results) if "step" in results[k]]
    print("\n| step | best val mean Dice (step) | " + " | ".join(rows[0]["best"]["dice"]) + " | wall s |")
    print("|---" * (len(rows[0]["best"]["dice"]) + 3) + "|")
    for r in rows:
        b = r["best"]
        cells = " | ".join(f"{v:.3f}" for v in b["dice"].values())
        print(f"| {r['step']} | {b['mean']:.3f} ({b['step']}) | {cells} | {r['wall_s']:.0f} |")


def _print_pair(pair: dict, base: str, arm: str) -> None:
    print(f"| seed | {base} best / last 3 | {arm} best / last 3 |\n| --- | --- | --- |")
    for r in pair["rows"]:
        b, a = r["base"], r["arm"]
        print(f"| {r['seed']} | {b['best']:.3f} / {b['last3']:.3f} | {a['best']:.3f} / {a['last3']:.3f} |")
    for fig in ("best", "last3"):
        t = pair[fig]
        print(f"{arm} - {base}, {fig}: {t['mean']:+.3f} (SD {t['sd']:.3f}, 95 % t-interval [{t['lo']:+.3f}, "
              f"{t['hi']:+.3f}], {t['n']} seeds); seeds to detect +0.05: {t['seeds_for_delta']}")  # fmt: skip


def _fmt(dice: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in dice.items())


if __name__ == "__main__":
    main()
