"""``gtgm study``: what pretraining is worth — arms (:mod:`gtgm.study.arms`) × label ratios × seeds.

Each run is a ``gtgm finetune`` into ``STUDY/<group>/<arm>/ratio<r>_seed<s>/``, or
``STUDY/<group>/<arm>/<recipe>/ratio<r>_seed<s>/`` for each candidate recipe of ``study.recipes`` (finished runs are
reused, so an interrupted study resumes). Per arm, the candidate with the higher mean best validation score is kept
(:func:`gtgm.study.select.choose_recipes`): ``study.json``'s ``results`` and the report hold the chosen runs only,
``all_results`` the validation scores of every candidate (each fine-tuning run scores its test set when it ends;
the rejected candidates' test figures stay in their run folders, unreported). Before the first run the study records
its read of the test set in the ledger beside the cache (:mod:`gtgm.study.ledger`). Every run shares the same
test / val cases and, per ratio, the
same labelled subset (``finetune.split_seed``); the seeds only change the initialisation and sampling.
``study.group_overrides`` adapts the configuration per group (e.g. the EM group's ``finetune.task=em``).
The report (Markdown + HTML) has, per group, a table of the test figures (mean ± std over seeds) per
ratio for each arm — Dice per class for segmentation, VOI / adapted Rand / CREMI score for EM, where the
trivial baseline (threshold + connected components) is reported too —, the paired differences between arms
per (seed, test case) with bootstrap intervals, the frozen-encoder probes (``study.probe``) and a plot
against label ratio.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from gtgm.config import Config, group_config, with_overrides
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import make_split
from gtgm.errors import GtgmError
from gtgm.fsutil import digest, file_sha256, lock_folder, read_json, write_json, write_text
from gtgm.schemas import PROBE_RESULT, TEST_METRICS
from gtgm.study.arms import PRETRAIN_ARMS, arm_encoder, check_arm_inputs
from gtgm.study.diagnostics import run_diagnostics
from gtgm.study.ledger import record_read
from gtgm.study.report import write_study_report
from gtgm.study.reuse import check_reuse
from gtgm.study.select import choose_recipes
from gtgm.study.stats import case_scores
from gtgm.train.finetune import finetune


def run_one(
    cfg: Config,
    group: str,
    arm: str,
    ratio: float,
    seed: int,
    encoder: str,
    root: Path,
    overrides: list[str] = (),
    progress: bool = False,
    readout: bool = False,
    recipe: str = "",
) -> dict[str, Any]:
    """One fine-tuning run of ``arm`` (its encoder: ``encoder``, '' = scratch; its recipe: the group's settings, then
    ``study.arm_overrides[arm]``, then the candidate ``study.recipes[arm][recipe]`` in ``<arm>/<recipe>/``); reused
    when finished. ``progress``: the run's progress bar (steps, loss). ``readout``: the frozen-encoder readout —
    only the decoder is trained (``readout_ratio<r>_seed<s>``)."""
    folder = root / group / arm / recipe if recipe else root / group / arm
    out = folder / f"{'readout_' if readout else ''}ratio{ratio:g}_seed{seed}"
    candidate = group_config(cfg, group, overrides).study.recipes.get(arm, {}).get(recipe, []) if recipe else []
    gcfg = group_config(cfg, group, overrides, arm, candidate)
    if readout:
        gcfg = with_overrides(gcfg, values={"finetune.freeze_encoder_steps": gcfg.finetune.steps})
    run_values = {"finetune.group": group, "finetune.label_ratio": ratio, "finetune.out": str(out)}
    c = with_overrides(gcfg, values={"seed": seed, **run_values, "finetune.pretrained": encoder})
    # a moved study folder is reused: its run folders and encoder paths moved, the encoders' SHA-256 did not
    sections = ("seed", "model", "finetune", "seg_augment", "em")
    check_reuse(out, c, sections, ignore=("finetune.out", "finetune.pretrained"))
    _check_encoder(out, encoder)
    done = out / "test_metrics.json"
    res = (
        read_json(done, schema=TEST_METRICS)
        if done.is_file()
        else finetune(c, resume=(out / "checkpoints" / "last.pt").exists(), progress=progress)
    )
    return {**res, "out": str(out)}


def _check_encoder(out: Path, encoder: str) -> None:
    """A run folder is reused only with the encoder file it was made from (its SHA-256, ``pretrained.sha256``), not
    its path: an encoder re-made at the same path (e.g. after deleting a pretraining run) does not inherit old
    results, and a study folder moved elsewhere (its encoders with it) is still reused. A run made from scratch is
    never reused for an encoder, nor the reverse. A folder where nothing was trained yet (a run that failed before
    its first checkpoint, e.g. on an encoder that does not fit) binds to nothing: its record is replaced."""
    record = out / "pretrained.sha256"
    trained = any((out / f).is_file() for f in ("checkpoints/last.pt", "best.pt", "test_metrics.json"))
    if not trained:
        record.unlink(missing_ok=True)
    made = trained and (out / "config.yaml").is_file()
    if not encoder:
        if record.is_file():
            raise GtgmError(f"{out} was fine-tuned from an encoder, not from scratch; delete {out} to redo it")
        return
    sha = file_sha256(encoder)
    if record.is_file() and record.read_text().strip() != sha:
        raise GtgmError(f"{out} was fine-tuned from another {encoder} (its SHA-256 differs); delete {out} to redo it")
    if not record.is_file() and made:
        raise GtgmError(f"{out} was fine-tuned from scratch, not from {encoder}; delete {out} to redo it")
    if not record.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_text(record, sha + "\n")


def _train_subset(cfg: Config, group: str, ratio: float, overrides: list[str]) -> tuple:
    """Which training cases / labelled slices a run would use: equal subsets give identical runs."""
    cache = VolumeCache(cfg.finetune.cache, group=group, labeled=True)
    f = group_config(cfg, group, overrides).finetune
    parts = make_split(cache, dataclasses.replace(f, group=group, label_ratio=ratio))["train"]
    return tuple((p.case, tuple(p.slices) if p.slices is not None else None) for p in parts)


def run_study(cfg: Config, pretrained: str = "", progress: bool = True, overrides: list[str] = ()) -> Path:
    """Run every (group, ratio, seed, arm) and write the report; returns the report's Markdown path.

    Arms, ratios and seeds are the group's (``study.group_overrides`` may change them per group). Arms that
    pretrain their encoder (:mod:`gtgm.study.arms`) pretrain first. Two ratios that select the same training
    subset for a seed (e.g. 1 % and 10 % of five cases both keep one case) give the same run; it is
    trained once and its result reported for both.
    """
    root = Path(cfg.study.out)
    plan = [
        (group, ratio, i, seed, arm, recipe, False)
        for group in cfg.study.groups
        for gs in [group_config(cfg, group, overrides).study]
        for ratio in gs.ratios
        for i, seed in enumerate(gs.seeds)
        for arm in gs.arms
        for recipe in gs.recipes.get(arm) or [""]
    ]
    # the frozen-encoder readout, at each segmentation group's smallest label ratio, with each arm's first candidate
    # recipe (the readout trains the decoder only: the encoder's recipe does not apply)
    if cfg.study.readout:
        plan += [
            (group, min(gs.ratios), i, seed, arm, next(iter(gs.recipes.get(arm) or [""])), True)
            for group in cfg.study.groups
            for gc in [group_config(cfg, group, overrides)]
            if gc.finetune.task != "em"
            for gs in [gc.study]
            for i, seed in enumerate(gs.seeds)
            for arm in gs.arms
        ]
    check_arm_inputs(cfg, {p[4] for p in plan}, pretrained)
    unused = sorted(set(cfg.study.recipes) - {p[4] for p in plan})
    if unused:
        raise GtgmError(f"study.recipes names arm(s) {unused} that are not in study.arms {cfg.study.arms}")
    root.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(root)  # one study per folder: a second process on this --out stops here
    try:
        return _run_plan(cfg, plan, pretrained, progress, overrides)
    finally:
        lock.release()


def _run_plan(cfg: Config, plan: list[tuple], pretrained: str, progress: bool, overrides: list[str]) -> Path:
    """Run each (group, ratio, seed index, seed, arm, readout) of ``plan``, then write ``study.json`` and the
    report; returns the report's path."""
    root = Path(cfg.study.out)
    results: dict[str, Any] = {}
    readouts: dict[str, Any] = {}
    test_reads = {g: _record_read(cfg, g, overrides, root) for g in dict.fromkeys(p[0] for p in plan)}
    seen: dict[tuple, dict[str, Any]] = {}
    host = machine()["host"]
    t0 = time.perf_counter()
    for n, (group, ratio, i, seed, arm, recipe, readout) in enumerate(plan, 1):
        seeds = group_config(cfg, group, overrides).study.pretrain_seeds
        pre_seed = seeds[i % len(seeds)] if arm in (*PRETRAIN_ARMS, "supervised") else None
        encoder = arm_encoder(cfg, arm, pre_seed, pretrained, root, progress, group, overrides)
        key = (group, arm, recipe, seed, encoder, readout, _train_subset(cfg, group, ratio, overrides))
        what = (
            f"{n}/{len(plan)} {group} {arm}{f' recipe {recipe}' if recipe else ''}"
            f"{' (frozen-encoder readout)' if readout else ''} ratio {ratio:g} seed {seed}"
        )
        if progress and key not in seen:
            print(f"[study] {what}: fine-tuning", flush=True)
        res = seen.get(key) or run_one(
            cfg, group, arm, ratio, seed, encoder, root, overrides, progress, readout, recipe
        )
        seen[key] = res
        row = {**_row(res, arm, ratio, seed, pre_seed, encoder), "recipe": recipe, "machine": host}
        (readouts if readout else results).setdefault(group, []).append(row)
        if progress:
            t = time.perf_counter() - t0
            # a candidate recipe shows its validation score: its test figure is reported only if it is chosen
            val = row["val_score"] if row["val_score"] is not None else float("nan")
            shown = f"best val {val:.3f}" if recipe else f"test {row['metric']} {row['score']:.3f}"
            print(f"[study] {what}: {shown} ({t:.0f} s)", flush=True)
    em_groups = [g for g in cfg.study.groups if group_config(cfg, g, overrides).finetune.task == "em"]
    baselines = {g: _baseline(group_config(cfg, g, overrides), g) for g in em_groups}
    probes = study_probes(cfg, results, root, overrides, progress) if cfg.study.probe else {}
    seconds = time.perf_counter() - t0
    every = results
    choices = {g: choose_recipes(rows) for g, rows in every.items()}  # per arm, its recipe chosen on validation
    results = {g: chosen for g, (chosen, _) in choices.items()}
    write_json(
        root / "study.json",
        {
            "pretrained": pretrained,
            "results": results,
            "all_results": {g: [_validation_only(r) for r in rows] for g, rows in every.items()},
            "recipe_choice": {g: choice for g, (_, choice) in choices.items()},
            "test_reads": test_reads,
            "machine": machine(),
            "readouts": readouts,
            "baselines": baselines,
            "probes": probes,
            "seconds": seconds,
        },
    )
    extra = {"choices": {g: c for g, (_, c) in choices.items()}, "test_reads": test_reads}
    return write_study_report(root, results, cfg, pretrained, seconds, baselines, overrides, probes, readouts, **extra)[
        0
    ]


def _validation_only(row: dict[str, Any]) -> dict[str, Any]:
    """A candidate's line in ``all_results``: what the choice rests on, no test figure."""
    keys = ("arm", "recipe", "ratio", "seed", "pretrain_seed", "val_score", "machine")
    return {k: row.get(k) for k in keys}


def _record_read(cfg: Config, group: str, overrides: list[str], root: Path) -> dict[str, Any]:
    """Record this study's read of ``group``'s test set (its test case ids) in the ledger beside the cache."""
    gcfg = group_config(cfg, group, overrides)
    cache = VolumeCache(gcfg.finetune.cache, group=group, labeled=True)
    test = make_split(cache, dataclasses.replace(gcfg.finetune, group=group))["test"]
    cases = sorted({cache.entries[p.case]["id"] for p in test})
    return record_read(gcfg.finetune.cache, group, cases, root)


def machine() -> dict[str, Any]:
    """Where the study ran: runs made on other machines are not bit-identical on CPU, so a comparison across
    machines is flagged (:func:`gtgm.study.select.compare`)."""
    import os
    import platform

    import torch

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _row(res: dict[str, Any], arm: str, ratio: float, seed: int, pre_seed: int | None, encoder: str) -> dict:
    """One run's line in ``study.json``: its test figures, per-case scores and diagnostics."""
    test = res["test"]
    return {
        "arm": arm,
        "ratio": ratio,
        "seed": seed,
        "pretrain_seed": pre_seed,
        "encoder": encoder,
        "metric": test["metric"],
        "values": test["summary"],
        "score": test[test["metric"]],
        "score_raw": test.get("dice_raw"),  # segmentation: mean Dice before post-processing
        "val_score": res.get("best_val"),
        "cases": case_scores(test),
        **run_diagnostics(res),
        "train_cases": res["train_cases"],
        "labelled_slices": res["labelled_slices"],
    }


def study_probes(
    cfg: Config, results: dict[str, Any], root: Path, overrides: list[str], progress: bool
) -> dict[str, list[dict[str, Any]]]:
    """Per group, the probes (gtgm.study.probe) of every distinct encoder the arms used (scratch: a random
    initialisation from the group's first seed), at the group's smallest label ratio; cached in ``root/probes``."""
    from gtgm.study.probe import run_probe

    out: dict[str, list[dict[str, Any]]] = {}
    for group, rows in results.items():
        gcfg = group_config(cfg, group, overrides)
        if gcfg.finetune.task == "em":
            continue
        gcfg = with_overrides(gcfg, values={"finetune.label_ratio": min(r["ratio"] for r in rows)})
        seed = rows[0]["seed"]
        for arm, encoder in dict.fromkeys((r["arm"], r["encoder"]) for r in rows):
            tag = Path(encoder).parent.name if encoder else f"random_seed{seed}"
            f = gcfg.finetune
            key = digest(
                [
                    gcfg.model,
                    gcfg.pretrain.patch_size,
                    f.split,
                    f.split_seed,
                    f.test_fraction,
                    f.val_fraction,
                    f.region_axis,
                    f.region_bounds,
                    f.label_ratio,
                    file_sha256(encoder) if encoder else seed,
                ]
            )
            path = root / "probes" / group / f"{arm}_{tag}_{key}.json"  # new settings or encoder: a new file
            if not path.is_file():
                if progress:
                    print(f"[study] probing {group} {arm} ({tag})", flush=True)
                write_json(path, {"arm": arm, **run_probe(gcfg, encoder, group, seed)})
            out.setdefault(group, []).append(read_json(path, schema=PROBE_RESULT))
    return out


def _baseline(cfg: Config, group: str) -> dict[str, Any]:
    """EM groups: the trivial baseline (threshold + components) on the test split."""
    from gtgm.train.tasks import AffinityTask

    cache = VolumeCache(cfg.finetune.cache, group=group, labeled=True)
    test = make_split(cache, dataclasses.replace(cfg.finetune, group=group))["test"]
    return AffinityTask(cfg, cache).baseline(test)
