"""``gtgm study``: what pretraining is worth — arms (:mod:`gtgm.study.arms`) × label ratios × seeds.

Each run is a ``gtgm finetune`` into ``STUDY/<group>/<arm>/ratio<r>_seed<s>/`` (finished runs are
reused, so an interrupted study resumes). Every run shares the same test / val cases and, per ratio, the
same labelled subset (``finetune.split_seed``); the seeds only change the initialisation and sampling.
``study.group_overrides`` adapts the configuration per group (e.g. the EM group's ``finetune.task=em``).
The report (Markdown + HTML) has, per group, a table of the test figures (mean ± std over seeds) per
ratio for each arm — Dice per class for segmentation, VOI / adapted Rand / CREMI score for EM, where the
trivial baseline (threshold + connected components) is reported too —, the paired differences between arms
per (seed, test case) with bootstrap intervals, the frozen-encoder probes (``study.probe``) and a plot
against label ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config, group_config
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import make_split
from gtgm.errors import GtgmError
from gtgm.fsutil import digest, file_sha256, read_json, write_json, write_text
from gtgm.report import write_report
from gtgm.study.arms import ARMS, COMPARISONS, arm_encoder, check_arm_inputs, check_reuse
from gtgm.study.stats import case_scores, paired_bootstrap, paired_differences
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
) -> dict[str, Any]:
    """One fine-tuning run of ``arm`` (its encoder: ``encoder``, '' = scratch); reused when finished."""
    out = root / group / arm / f"ratio{ratio:g}_seed{seed}"
    c = copy.deepcopy(group_config(cfg, group, overrides))
    c.seed = seed
    f = c.finetune
    f.group, f.label_ratio, f.out, f.pretrained = group, ratio, str(out), encoder
    check_reuse(out, c, ("seed", "model", "finetune", "em"))
    _check_encoder(out, encoder)
    done = out / "test_metrics.json"
    if done.is_file():
        return read_json(done)
    if (out / "checkpoints" / "last.pt").exists():
        return finetune(c, resume=True, progress=False)
    return finetune(c, progress=False)


def _check_encoder(out: Path, encoder: str) -> None:
    """A run folder is reused only with the encoder file it was made from (its SHA-256, ``pretrained.sha256``):
    an encoder re-made at the same path (e.g. after deleting a pretraining run) does not inherit old results."""
    if not encoder:
        return
    record, sha = out / "pretrained.sha256", file_sha256(encoder)
    if record.is_file() and record.read_text().strip() != sha:
        raise GtgmError(f"{out} was fine-tuned from another {encoder} (its SHA-256 differs); delete {out} to redo it")
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
    results: dict[str, Any] = {}
    seen: dict[tuple, dict[str, Any]] = {}
    t0 = time.perf_counter()
    plan = [
        (group, ratio, i, seed, arm)
        for group in cfg.study.groups
        for gs in [group_config(cfg, group, overrides).study]
        for ratio in gs.ratios
        for i, seed in enumerate(gs.seeds)
        for arm in gs.arms
    ]
    check_arm_inputs(cfg, {arm for *_, arm in plan}, pretrained)
    for n, (group, ratio, i, seed, arm) in enumerate(plan, 1):
        seeds = group_config(cfg, group, overrides).study.pretrain_seeds
        encoder = arm_encoder(cfg, arm, seeds[i % len(seeds)], pretrained, root, progress)
        key = (group, arm, seed, encoder, _train_subset(cfg, group, ratio, overrides))
        res = seen.get(key) or run_one(cfg, group, arm, ratio, seed, encoder, root, overrides)
        seen[key] = res
        test = res["test"]
        results.setdefault(group, []).append(
            {
                "arm": arm,
                "ratio": ratio,
                "seed": seed,
                "encoder": encoder,
                "metric": test["metric"],
                "values": test["summary"],
                "score": test[test["metric"]],
                "val_score": res.get("best_val"),
                "cases": case_scores(test),
                "train_cases": res["train_cases"],
                "labelled_slices": res["labelled_slices"],
            }
        )
        if progress:
            print(
                f"[study] {n}/{len(plan)} {group} {arm} ratio {ratio:g} seed {seed}: test "
                f"{test['metric']} {test[test['metric']]:.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    em_groups = [g for g in cfg.study.groups if group_config(cfg, g, overrides).finetune.task == "em"]
    baselines = {g: _baseline(group_config(cfg, g, overrides), g) for g in em_groups}
    probes = study_probes(cfg, results, root, overrides, progress) if cfg.study.probe else {}
    seconds = time.perf_counter() - t0
    write_json(
        root / "study.json",
        {"pretrained": pretrained, "results": results, "baselines": baselines, "probes": probes, "seconds": seconds},
    )
    return write_study_report(root, results, cfg, pretrained, seconds, baselines, overrides, probes)[0]


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
        gcfg.finetune.label_ratio = min(r["ratio"] for r in rows)
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
            out.setdefault(group, []).append(read_json(path))
    return out


def _baseline(cfg: Config, group: str) -> dict[str, Any]:
    """EM groups: the trivial baseline (threshold + components) on the test split."""
    from gtgm.train.tasks import AffinityTask

    cache = VolumeCache(cfg.finetune.cache, group=group, labeled=True)
    test = make_split(cache, dataclasses.replace(cfg.finetune, group=group))["test"]
    return AffinityTask(cfg, cache).baseline(test)


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, tuple[float, float, int]]]:
    """(arm, ratio) -> {class or measure, and "score": (mean, std, n) over the n seeds}."""
    out: dict[tuple[str, float], dict[str, tuple[float, float, int]]] = {}
    for arm in ARMS:
        for ratio in sorted({r["ratio"] for r in rows}):
            sel = [r for r in rows if r["arm"] == arm and r["ratio"] == ratio]
            if not sel:
                continue
            # class keys are ints in a fresh run and strings in one reused from its test_metrics.json
            values = [{str(c): v for c, v in r["values"].items()} for r in sel]
            stats = {c: _stat([v[c] for v in values if c in v]) for c in dict.fromkeys(k for v in values for k in v)}
            stats["score"] = _stat([r["score"] for r in sel])
            out[(arm, ratio)] = stats
    return out


def _stat(values: list[float]) -> tuple[float, float, int]:
    return float(np.mean(values)), float(np.std(values)), len(values)


def fmt_stat(stat: tuple[float, float, int]) -> str:
    """``mean ± std`` over seeds; a single run is shown as its value alone (no "± 0.000")."""
    mean, std, n = stat
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def class_names(cache_root: str | Path, group: str) -> dict[str, str]:
    """Class value (as a string) -> name, from the labels of the cache's ``index.json`` (from ``dataset.json``);
    ``{}`` when the group declares none."""
    index = read_json(Path(cache_root) / "index.json")
    return dict(index.get("groups", {}).get(group, {}).get("labels", {}))


def seeds_phrase(rows: list[dict[str, Any]]) -> str:
    n = len({r["seed"] for r in rows})
    return "n = 1 run (one seed; no spread to show)" if n == 1 else f"mean ± std over n = {n} seeds"


METRIC_LABEL = {"mean_dice": "mean test Dice (higher is better)", "voi": "test VOI, bits (lower is better)"}


def write_study_report(
    root: Path,
    results: dict[str, Any],
    cfg: Config,
    pretrained: str,
    seconds: float,
    baselines: dict[str, dict[str, Any]] | None = None,
    overrides: list[str] = (),
    probes: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks: list = [
        (
            "text",
            f"Fine-tuning {cfg.model.encoder} (channels {cfg.model.channels}); arms {cfg.study.arms} "
            f"({_arms_phrase(pretrained)}); label ratios {cfg.study.ratios}, seeds {cfg.study.seeds} (per-group "
            f"changes: {cfg.study.group_overrides or 'none'}); {seconds / 60:.1f} min for this invocation "
            "(finished runs are reused, not re-timed). "
            "Test figures, mean ± std over seeds (a single seed is shown as its value). "
            "Segmentation: Dice per class (classes without any test voxels "
            "count as 1 when nothing is predicted, see gtgm.metrics). EM: VOI split / merge (bits), adapted Rand "
            "error and CREMI score at the agglomeration threshold chosen on validation.",
        )
    ]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (group, rows) in zip(axes[0], results.items()):
        blocks += _group_blocks(group, rows, group_config(cfg, group, overrides), (baselines or {}).get(group))
        blocks += probe_blocks((probes or {}).get(group, []))
        summary = summarize(rows)
        for arm, style in zip(ARMS, ("--o", "-s", "-^", "-v", "-D", ":x")):
            pts = sorted((r, s["score"]) for (a, r), s in summary.items() if a == arm)
            if not pts:
                continue
            ax.errorbar(
                [p[0] for p in pts],
                [p[1][0] for p in pts],
                yerr=[p[1][1] if p[1][2] > 1 else 0.0 for p in pts],
                fmt=style,
                capsize=3,
                label=arm,
            )
        if (baselines or {}).get(group):
            ax.axhline(baselines[group]["voi"], ls=":", color="grey", label="threshold + components")
        ax.set_xscale("log"), ax.set_xlabel("label ratio"), ax.set_title(group)
        ax.set_ylabel(METRIC_LABEL.get(rows[0]["metric"], rows[0]["metric"]))
        ax.legend()
    fig.tight_layout()
    figure = root / "score_vs_ratio.png"
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    blocks.insert(1, ("figure", (figure, "Main test figure against label ratio (error bars: std over seeds)")))
    return write_report(root, "gtgm label-efficiency study", blocks, name="report")


def _group_blocks(group: str, rows: list[dict[str, Any]], cfg: Config, baseline: dict[str, Any] | None) -> list:
    summary = summarize(rows)
    keys = [k for k in next(iter(summary.values())) if k != "score"]
    em = rows[0]["metric"] == "voi"
    names = {} if em else class_names(cfg.finetune.cache, group)
    header = ["arm", "label ratio", *(names.get(c, f"class {c}") for c in keys)] + ([] if em else ["mean"])
    table = []
    for (arm, ratio), s in summary.items():
        cells = [fmt_stat(s[c]) for c in keys]
        table.append([arm, f"{ratio:g}", *cells, *([] if em else [fmt_stat(s["score"])])])
    if baseline:
        table.append(
            [f"baseline: raw > {baseline['threshold']:g} + components", "-", *[f"{baseline[k]:.3f}" for k in keys]]
        )
    f = cfg.finetune
    text = (
        f"{f.task} task, {f.steps} steps per run, patches {f.patch_size}, batch {f.batch_size}, lr {f.lr}; "
        f"test figures, {seeds_phrase(rows)}."
    )
    if baseline:
        text += " The baseline's threshold is the best on the test split itself (in its favour)."
    return [("heading", group), ("text", text), ("table", (header, table)), *paired_blocks(rows)]


def probe_blocks(probes: list[dict[str, Any]]) -> list:
    """A table of the frozen-encoder probes of one group (see gtgm.study.probe)."""
    if not probes:
        return []
    rows = [
        [
            p["arm"],
            p["encoder"],
            f"{p['voxel']['mean_dice']:.3f}",
            f"{p['presence']['mean_auc']:.3f}",
            f"{p['voxel']['train_voxels']} / {p['presence']['windows'][0]} / {p['presence']['windows'][1]}",
        ]
        for p in probes
    ]
    text = (
        "Frozen-encoder probes (gtgm.study.probe), the same voxels, windows and test cases for every encoder: a linear "
        "read-out of every stage's features per voxel (mean test Dice over classes), and per class a logistic "
        "regression on the pooled feature of pretraining-patch-sized windows predicting whether the class is present "
        "(mean test ROC AUC)."
    )
    header = ["arm", "encoder", "voxel probe: Dice", "presence probe: AUC", "train voxels / train / test windows"]
    return [("text", text), ("table", (header, rows))]


def _arms_phrase(pretrained: str) -> str:
    given = f"pretrained: {pretrained}; " if pretrained else ""
    return (
        f"{given}gtgm, image_only, text_only and shuffled_text are pretrained by the study itself, "
        "see gtgm.study.arms, on volumes and regions disjoint from the fine-tuning validation and test cases"
    )


def paired_blocks(rows: list[dict[str, Any]]) -> list:
    """Arm − baseline per (seed, test case) with a 95 % bootstrap interval, per comparison and label ratio."""
    em = rows[0]["metric"] == "voi"
    table = []
    for arm, base in COMPARISONS:
        for ratio, pairs in sorted(paired_differences(rows, arm, base, with_cases=True).items()):
            b = paired_bootstrap([d for _, d in pairs], clusters=[c for c, _ in pairs])
            below, above = b["hi"] < 0, b["lo"] > 0
            better, worse = (below, above) if em else (above, below)
            verdict = f"{arm} better" if better else f"{arm} worse" if worse else "no difference shown"
            units = b["clusters"] if b["resampled"] == "clusters" else b["n"]
            if b["n"] < 2:  # one difference: no spread, so no interval and no verdict
                verdict = "one pair: no interval"
            elif units < 3:  # a percentile interval of 2 resampled units is just their range
                verdict = "too few to judge (< 3 resampled)"
            cases = f"{b['clusters']} test case{'s' if b['clusters'] > 1 else ''}"
            if b["clusters"] < 2 and b["n"] > 1:
                cases += "; seeds resampled"
            table.append(
                [
                    f"{arm} − {base}",
                    f"{ratio:g}",
                    f"{b['n']} ({cases})",
                    f"{b['mean']:+.3f}",
                    f"[{b['lo']:+.3f}, {b['hi']:+.3f}]",
                    verdict,
                ]
            )
    if not table:
        return []
    rule = (
        "Decision rule, fixed before the numbers: an arm beats its baseline at a ratio only if the whole 95 % "
        f"interval of the paired difference per (seed, test case) lies {'below' if em else 'above'} 0 "
        f"({'VOI: lower is better' if em else 'mean Dice over classes'}); otherwise no difference is shown. "
        "The interval resamples whole test cases, each with all its seeds (the seeds of one case are not "
        "independent draws), or the seeds when there is a single test case (the interval then shows seed-to-seed "
        "spread only); fewer than 3 resampled units give no verdict; pretraining randomness enters only through "
        "the pretraining seeds the study ran (study.pretrain_seeds); no correction is made for the number of "
        "comparisons."
    )
    header = [
        "comparison",
        "label ratio",
        "pairs (seed × test case)",
        "mean difference",
        "95 % bootstrap interval",
        "verdict",
    ]
    return [("text", rule), ("table", (header, table))]
