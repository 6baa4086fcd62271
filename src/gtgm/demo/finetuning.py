"""The demo's fine-tuning stages: one converged run per task through ``gtgm study``, prediction and evaluation
of the held-out raw CT (phantoms; real CT) with the main run of their group, and the report's table of
fine-tuning runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtgm.config import Config
from gtgm.data.datasets import Dataset
from gtgm.demo.pretraining import demo_config
from gtgm.fsutil import read_json
from gtgm.schemas import SPLIT_JSON, STUDY_JSON


def study_stage(out: Path, cfg: Config, run: Path, progress: bool, overrides: list[str]) -> Path:
    """``gtgm study`` on the demo's cache with the pretrained encoder ``run/encoder.pt`` (``cfg`` is not changed)."""
    from gtgm.study.run import run_study

    return run_study(demo_config(cfg, out, study=True), str(run / "encoder.pt"), progress, overrides)


def final_run(out: Path, cfg: Config, group: str, overrides: list[str] = ()) -> Path:
    """The demo's main run of ``group``: the pretrained arm (if run), most labels, first seed (the group's
    own study settings, ``study.group_overrides``)."""
    from gtgm.config import group_config

    s = group_config(cfg, group, overrides).study
    arm = "pretrained" if "pretrained" in s.arms else s.arms[-1]
    return out / "study" / group / arm / f"ratio{max(s.ratios):g}_seed{s.seeds[0]}"


def predict_and_evaluate(
    out: Path, cfg: Config, dataset: Dataset, group: str, overrides: list[str] = (), dest: str = "predictions"
) -> dict[str, Any]:
    """Segment the raw files (input geometry) of the test cases of ``group``'s main run with its ``best.pt`` into
    ``out/dest``, then score them against their reference labels (copied to ``out/dest/labels``)."""
    import shutil

    from gtgm.infer.evaluate import evaluate_folders
    from gtgm.infer.predict import predict_inputs

    run = final_run(out, cfg, group, overrides)
    test_ids = [p["id"] for p in read_json(run / "split.json", schema=SPLIT_JSON)["test"]]
    cases = {c.id: c for c in dataset.select(group)}
    images = {case: cases[case].images[0].path for case in test_ids}
    labels = out / dest / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for case in test_ids:
        shutil.copyfile(cases[case].label.path, labels / f"{case}.nii.gz")
    predict_inputs(run / "best.pt", list(images.values()), out / dest, cfg.device)
    return {"run": run, "images": images, "folder": out / dest, **evaluate_folders(out / dest, labels)}


def study_blocks(out: Path, cfg: Config, study_report: Path) -> list:
    from gtgm.study.report import fmt_stat, seeds_phrase, summarize

    study = read_json(study_report.parent / "study.json", schema=STUDY_JSON)
    rows = []
    for group, runs in study["results"].items():
        metric = "mean Dice" if runs[0]["metric"] == "mean_dice" else "VOI (lower is better)"
        for (arm, ratio), stats in summarize(runs).items():
            rows.append([group, arm, f"{ratio:g}", metric, fmt_stat(stats["score"]), seeds_phrase(runs)])
        if group in study.get("baselines", {}):
            b = study["baselines"][group]
            rows.append([group, f"baseline: raw > {b['threshold']:g} + components", "-", "VOI", f"{b['voi']:.3f}", ""])
    return [
        ("heading", "Fine-tuning runs"),
        (
            "text",
            f"Arms {cfg.study.arms}, label ratios {cfg.study.ratios}, seeds {cfg.study.seeds} (per group: "
            f"{cfg.study.group_overrides}): a few converged runs "
            "(the full grid, scratch vs pretrained at 1 %, 10 % and 100 % of the labels over 3 seeds, is "
            "`gtgm study --config finetune/cpu-small`). Per-class tables: "
            f"{study_report.relative_to(out)}. CT phantoms: label ratio = share of training cases; MNI152: "
            "spatially disjoint left/right slabs, label ratio = share of labelled axial slices; synthetic EM: "
            "first sections train, last test, label ratio = share of the training sections labelled "
            "(affinities, waterz agglomeration, VOI).",
        ),
        ("table", (["group", "arm", "label ratio", "measure", "test", "runs"], rows)),
    ]
