"""The study's report: per group and arm the test figure over seeds (of the recipe chosen on validation), the
paired differences between arms with their bootstrap intervals (:mod:`gtgm.study.stats`), seed-level SD and the
seeds needed for +0.05 (:mod:`gtgm.study.select`), the candidate recipes' validation scores, the test-set reads,
the reading rule's sentence, the probes, and a figure of the learning curves."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config, group_config
from gtgm.fsutil import read_json
from gtgm.report import write_report
from gtgm.schemas import CACHE_INDEX
from gtgm.study.arms import ARMS, COMPARISONS
from gtgm.study.diagnostics import class_blocks, curve_blocks, drift_blocks
from gtgm.study.select import DELTA, compare, read_by_rule


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
            raw = [r["score_raw"] for r in sel if r.get("score_raw") is not None]
            if len(raw) == len(sel):  # segmentation: the mean Dice before post-processing
                stats["score_raw"] = _stat(raw)
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
    index = read_json(Path(cache_root) / "index.json", schema=CACHE_INDEX)
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
    readouts: dict[str, list[dict[str, Any]]] | None = None,
    choices: dict[str, dict[str, Any]] | None = None,
    test_reads: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """The report (Markdown + HTML) of a study's chosen runs ``results`` (per group); ``choices``: per group and
    arm, the recipes' mean validation scores and the one chosen (:func:`gtgm.study.select.choose_recipes`);
    ``test_reads``: per group, how often its test set was read (:func:`gtgm.study.ledger.record_read`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks: list = [
        (
            "text",
            f"Fine-tuning {cfg.model.encoder} (channels {cfg.model.channels}); arms {cfg.study.arms} "
            f"({_arms_phrase(pretrained)}); label ratios {cfg.study.ratios}, seeds {cfg.study.seeds} (per-group "
            f"changes: {cfg.study.group_overrides or 'none'}; per-arm fine-tuning recipes: "
            f"{cfg.study.arm_overrides or 'none'}); {seconds / 60:.1f} min for this invocation "
            "(finished runs are reused, not re-timed). "
            "Test figures, mean ± std over seeds (a single seed is shown as its value). "
            "Segmentation: Dice per class (classes without any test voxels "
            "count as 1 when nothing is predicted, see gtgm.metrics). EM: VOI split / merge (bits), adapted Rand "
            "error and CREMI score at the agglomeration threshold chosen on validation.",
        )
    ]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (group, rows) in zip(axes[0], results.items()):
        gcfg = group_config(cfg, group, overrides)
        blocks += _group_blocks(group, rows, gcfg, (baselines or {}).get(group))
        blocks += recipe_blocks((choices or {}).get(group, {})) + reads_blocks((test_reads or {}).get(group))
        blocks += rule_blocks(gcfg.study.rule, rows)
        names = {} if rows[0]["metric"] == "voi" else class_names(gcfg.finetune.cache, group)
        blocks += curve_blocks(rows, gcfg.study.curve_steps, root / f"curves_{group}.png")
        blocks += class_blocks(rows, names) + drift_blocks(rows)
        if (readouts or {}).get(group):
            blocks += _group_blocks(group, readouts[group], gcfg, None, title=f"{group}: frozen-encoder readout")
        blocks += probe_blocks((probes or {}).get(group, []))
        summary = summarize(rows)
        for arm, style in zip(
            ARMS, cycle(("--o", "-s", "-.P", "-^", "-v", "-D", ":x", "-.*", ":<", ":>", "-h", "--d"))
        ):
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


def _group_blocks(
    group: str, rows: list[dict[str, Any]], cfg: Config, baseline: dict[str, Any] | None, title: str = ""
) -> list:
    summary = summarize(rows)
    keys = [k for k in next(iter(summary.values())) if k not in ("score", "score_raw")]
    em = rows[0]["metric"] == "voi"
    raw = not em and all("score_raw" in s for s in summary.values())
    names = {} if em else class_names(cfg.finetune.cache, group)
    header = ["arm", "label ratio", *(names.get(c, f"class {c}") for c in keys)] + ([] if em else ["mean"])
    header += ["mean before post-processing"] if raw else []
    table = []
    for (arm, ratio), s in summary.items():
        cells = [fmt_stat(s[c]) for c in keys]
        table.append([arm, f"{ratio:g}", *cells, *([] if em else [fmt_stat(s["score"])])])
        table[-1] += [fmt_stat(s["score_raw"])] if raw else []
    if baseline:
        table.append(
            [f"baseline: raw > {baseline['threshold']:g} + components", "-", *[f"{baseline[k]:.3f}" for k in keys]]
        )
    f = cfg.finetune
    text = (
        f"{f.task} task, {f.steps} steps per run, patches {f.patch_size}, batch {f.batch_size}, lr {f.lr}; "
        f"test figures, {seeds_phrase(rows)}."
    )
    if raw:
        text += (
            " Dice after post-processing: each class in a run's validation-chosen list is reduced to its largest "
            "connected component (gtgm.infer.postprocess); the last column is the mean before it."
        )
    if baseline:
        text += " The baseline's threshold is the best on the test split itself (in its favour)."
    if title:
        text = (
            "Frozen-encoder readout: the same runs with the encoder kept at its start for all "
            f"{f.steps} steps (only the decoder learns): what the initialisation alone is worth. " + text
        )
    return [("heading", title or group), ("text", text), ("table", (header, table)), *paired_blocks(rows)]


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
        f"{given}gtgm, gtgm_vicreg, image_only, text_only, shuffled_text and mae are pretrained by the study itself, "
        "see gtgm.study.arms, on volumes and regions disjoint from the fine-tuning validation and test cases; "
        "supervised, the positive control, is the encoder of a segmenter trained with every labelled training case"
    )


def recipe_blocks(choice: dict[str, dict[str, Any]]) -> list:
    """Per arm with candidate recipes, each recipe's mean best validation score and the one chosen."""
    rows = [
        [arm, name, f"{val:.3f}", "chosen" if name == c["chosen"] else ""]
        for arm, c in choice.items()
        if len(c["val"]) > 1
        for name, val in c["val"].items()
    ]
    if not rows:
        return []
    text = (
        "Recipes chosen on validation (study.recipes): each candidate ran for every seed in this folder; the one with "
        "the higher mean best validation score is the arm's, and only its test figures appear above and below."
    )
    return [("text", text), ("table", (["arm", "recipe", "mean best validation score", ""], rows))]


def reads_blocks(reads: dict[str, Any] | None) -> list:
    """How many study folders have read this test set (the ledger beside the cache)."""
    if not reads:
        return []
    if reads["reads"] is None:
        return [("text", f"Test-set reads: not recorded ({reads.get('error', 'no ledger')}).")]
    first = "this study is its first reader" if reads["first"] else "this study is not its first reader"
    return [("text", f"Test-set reads: {reads['reads']} study folder(s) have read this test set; {first}.")]


def rule_blocks(rule: str, rows: list[dict[str, Any]]) -> list:
    """The reading rule written in the preset before the run, applied to this run's comparisons."""
    if not rule:
        return []
    verdict = read_by_rule(rule, compare(rows, COMPARISONS))
    return [("text", f"Reading rule '{rule}' (fixed in the preset before the run): {verdict}")]


def paired_blocks(rows: list[dict[str, Any]]) -> list:
    """Arm − baseline per (seed, test case) with a 95 % hierarchical bootstrap interval, the seed-level SD and the
    paired seeds that would detect +0.05 with 80 % power, per comparison and ratio."""
    em = rows[0]["metric"] == "voi"
    table = []
    for b in compare(rows, COMPARISONS):
        sources = _sources(b)
        table.append(
            [
                f"{b['arm']} − {b['base']}",
                f"{b['ratio']:g}",
                f"{b['n']} ({sources})",
                f"{b['mean']:+.3f}",
                f"[{b['lo']:+.3f}, {b['hi']:+.3f}]",
                "-" if b["seed_sd"] is None else f"{b['seed_sd']:.3f} / {b['seeds_needed']}",
                _verdict(b, em),
            ]
        )
    if not table:
        return []
    rule = (
        "Decision rule, fixed before the numbers: an arm beats its baseline at a ratio only if the whole 95 % "
        f"interval of the paired difference per (seed, test case) lies {'below' if em else 'above'} 0 "
        f"({'VOI: lower is better' if em else 'mean Dice over classes'}); otherwise no difference is shown. "
        "The interval is a hierarchical bootstrap (gtgm.study.stats): each replicate redraws the test cases, the "
        "pretraining seeds and, within each, the fine-tuning seeds, so it covers every source of chance the study "
        "ran (a level with a single value adds no spread: one pretraining seed says nothing about pretraining "
        "randomness). Fewer than 3 test cases and fewer than 3 seeds give no verdict; no correction is made for the "
        "number of comparisons."
    )
    header = [
        "comparison",
        "label ratio",
        "pairs (test cases × seeds)",
        "mean difference",
        "95 % bootstrap interval",
        f"seed-level SD / paired seeds for {DELTA:+.2f} at 80 % power",
        "verdict",
    ]
    return [("text", rule), ("table", (header, table))]


def _verdict(b: dict[str, Any], em: bool) -> str:
    """What one comparison shows under the decision rule (VOI: lower is better)."""
    below, above = b["hi"] < 0, b["lo"] > 0
    better, worse = (below, above) if em else (above, below)
    verdict = f"{b['arm']} better" if better else f"{b['arm']} worse" if worse else "no difference shown"
    if b["n"] < 2:  # one difference: no spread, so no interval and no verdict
        return "one pair: no interval"
    if max(b["cases"], b["seeds"]) < 3:  # a percentile interval of 2 resampled units is their range
        return "too few to judge (< 3 resampled)"
    if 2 in (b["seeds"], b["pretrain_seeds"]):  # a bootstrap of 2 values halves their variance
        verdict += " (2 seeds: their spread is underestimated)"
    if b.get("cross_folder"):
        verdict += " (runs from several folders or machines: not a within-run pair)"
    return verdict


def _sources(b: dict[str, Any]) -> str:
    plural = lambda k, word: f"{k} {word}{'s' if k > 1 else ''}"  # noqa: E731
    sources = f"{plural(b['cases'], 'test case')} × {plural(b['seeds'], 'seed')}"
    if b["pretrain_seeds"] > 1:
        sources += f" ({plural(b['pretrain_seeds'], 'pretraining seed')})"
    return sources
