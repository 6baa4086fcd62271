"""``gtgm demo``: every stage that exists, on the embedded example corpus, ending in a report.

Stages so far: example data -> preprocessing cache -> captions (describe) -> text embeddings (MiniLM)
-> pretraining -> one converged fine-tuning run per task (the CPU recipe, ``gtgm study`` with one arm,
ratio and seed) -> prediction and evaluation of held-out CT phantoms -> exports (MONAI bundle, nnU-Net dataset,
plan and resenc weights: :mod:`gtgm.demo.exports`) -> zero-shot queries on the held-out phantoms and the caption
audit (:mod:`gtgm.demo.queries`) -> report, which opens with the per-class test figures and overlays
(:mod:`gtgm.demo.results`). Preset: ``configs/demo.yaml``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config
from gtgm.data.datasets import load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.patches import TwoViewPatchDataset, VolumeCache
from gtgm.data.preprocess import preprocess_dataset
from gtgm.demo.exports import demo_exports, export_blocks
from gtgm.demo.queries import demo_query, query_blocks
from gtgm.demo.results import headline_blocks
from gtgm.report import write_report


def run_demo(out: str | Path, cfg: Config, progress: bool = True, overrides: list[str] = ()) -> dict[str, Path]:
    """Run the demo into ``out``; returns what was written where. ``overrides`` (the command line's
    ``key=value`` items, already in ``cfg``) also win over the study's per-group overrides."""
    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    examples = out / "examples"
    if (examples / "dataset.json").is_file():
        print(f"[demo] example corpus already in {examples}; reusing it")
    else:
        write_examples(examples, progress=progress)
    timings["example data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = preprocess_dataset(load_dataset(examples), out / "cache", cfg.preprocess, progress=progress)
    timings["preprocess"] = time.perf_counter() - t0
    captions = _captions(out, cfg, timings, progress)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = pretrain_run(out, cfg, progress)
    timings["pretraining"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    study = _study(out, cfg, run, progress, list(overrides))
    timings["fine-tuning study"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = _predict_and_evaluate(out, cfg, examples, list(overrides)) if "ct_phantom" in cfg.study.groups else {}
    timings["predict + evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    exports = {}
    if "ct_phantom" in cfg.study.groups:
        exports = demo_exports(out, cfg, examples, _final_run(out, cfg, "ct_phantom", list(overrides)), progress)
    timings["exports"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries = _queries(out, run, examples, evaluation, progress)
    timings["query + audit"] = time.perf_counter() - t0
    cache = VolumeCache(out / "cache")
    montage = _montage(cache, figures / "corpus.png")
    views = _two_view_figure(cache, cfg, figures / "two_views.png")
    main_runs = {g: _final_run(out, cfg, g, list(overrides)) for g in cfg.study.groups}
    baselines = json.loads((study.parent / "study.json").read_text()).get("baselines", {})
    blocks = _blocks(index, timings, montage, views)
    blocks[-2:-2] = (
        _caption_blocks(captions)
        + _pretrain_blocks(run, cfg, figures / "pretraining.png")
        + _study_blocks(out, cfg, study)
        + export_blocks(out, exports)
        + query_blocks(out, queries)
    )
    blocks = headline_blocks(out, cfg, main_runs, evaluation, baselines) + blocks
    report_md, report_html = write_report(out, "gtgm demo", blocks)
    written = {
        "example corpus": examples / "dataset.json",
        "preprocessed cache": out / "cache" / "index.json",
        "captions": out / "captions.jsonl",
        "text embeddings": out / "text" / "embeddings.npy",
        "pretrained encoder": run / "encoder.pt",
        "study report": study,
        **({"predictions + metrics": out / "predictions" / "metrics.csv"} if evaluation else {}),
        **exports,
        **(
            {"query maps": out / "query" / "query.json", "caption audit": out / "audit" / "audit.md"} if queries else {}
        ),
        "report (Markdown)": report_md,
        "report (HTML)": report_html,
    }
    return written


def _captions(out: Path, cfg: Config, timings: dict[str, float], progress: bool) -> dict[str, Any]:
    from gtgm.text.captioners import create_captioner
    from gtgm.text.captions import caption_stats, read_captions, run_captioning
    from gtgm.text.encoders import embed_captions

    cache = VolumeCache(out / "cache")
    t0 = time.perf_counter()
    cap = run_captioning(
        cache,
        create_captioner(cfg.caption, cfg.device),
        out / "captions.jsonl",
        cfg.caption,
        cfg.seed,
        progress=progress,
    )
    timings["captions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = embed_captions(out / "captions.jsonl", out / "text", cfg.text, cfg.device, progress=progress)
    timings["text embeddings"] = time.perf_counter() - t0
    records = read_captions(out / "captions.jsonl")
    return {"run": cap, "embed": emb, "records": records, "stats": caption_stats(records)}


def pretrain_run(out: Path, cfg: Config, progress: bool, run: Path | None = None) -> Path:
    """Pretrain on the demo's cache, captions and text cache into ``run`` (default ``out/pretrain``), unless a
    finished run is there (an interrupted one is resumed)."""
    from gtgm.train.pretrain import pretrain

    run = run or out / "pretrain"
    p = cfg.pretrain
    p.cache, p.captions, p.text_cache, p.out = (
        str(out / "cache"),
        str(out / "captions.jsonl"),
        str(out / "text"),
        str(run),
    )
    if (run / "encoder.pt").is_file():
        print(f"[demo] {run} already holds a finished pretraining run; reusing it")
        return run
    pretrain(cfg, resume=(run / "checkpoints" / "last.pt").is_file(), progress=progress)
    return run


def _study(out: Path, cfg: Config, run: Path, progress: bool, overrides: list[str]) -> Path:
    from gtgm.study.run import run_study

    cfg.finetune.cache, cfg.study.out = str(out / "cache"), str(out / "study")
    return run_study(cfg, str(run / "encoder.pt"), progress, overrides)


def _final_run(out: Path, cfg: Config, group: str, overrides: list[str] = ()) -> Path:
    """The demo's main run of ``group``: the pretrained arm (if run), most labels, first seed (the group's
    own study settings, ``study.group_overrides``)."""
    from gtgm.config import group_config

    s = group_config(cfg, group, overrides).study
    arm = "pretrained" if "pretrained" in s.arms else s.arms[-1]
    return out / "study" / group / arm / f"ratio{max(s.ratios):g}_seed{s.seeds[0]}"


def _predict_and_evaluate(out: Path, cfg: Config, examples: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Segment the raw NIfTI of the held-out CT phantoms with the main CT run, then score them."""
    import shutil

    from gtgm.infer.predict import evaluate_folders, predict_inputs

    run = _final_run(out, cfg, "ct_phantom", overrides)
    test_ids = [p["id"] for p in json.loads((run / "split.json").read_text())["test"]]
    labels = out / "predictions" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for case in test_ids:
        shutil.copyfile(examples / "ct" / f"{case}_label.nii.gz", labels / f"{case}.nii.gz")
    predict_inputs(
        run / "best.pt", [examples / "ct" / f"{case}.nii.gz" for case in test_ids], out / "predictions", cfg.device
    )
    return {"run": run, **evaluate_folders(out / "predictions", labels)}


def _queries(out: Path, run: Path, examples: Path, evaluation: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Zero-shot queries on the held-out CT phantoms (the main CT run's test cases) and the caption audit."""
    if not evaluation:
        return {}
    held_out = [examples / "ct" / f"{case}.nii.gz" for case in evaluation["cases"]]
    return demo_query(out, run, held_out, progress)


def _study_blocks(out: Path, cfg: Config, study_report: Path) -> list:
    from gtgm.study.run import fmt_stat, seeds_phrase, summarize

    study = json.loads((study_report.parent / "study.json").read_text())
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


def _pretrain_blocks(run: Path, cfg: Config, figure: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtgm.train.logs import read_log

    log = read_log(run)
    steps = [r for r in log if "loss" in r]
    evals = [r for r in log if "retrieval/top1" in r]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for key in [k for k in steps[0] if k.endswith("_loss") or k == "loss"] if steps else []:
        ax[0].plot([r["step"] for r in steps], [r[key] for r in steps], label=key)
    ax[0].set_xlabel("step"), ax[0].set_title("pretraining loss"), ax[0].legend(fontsize=7)
    for key, style in (("top1", "-o"), ("top5", "-s")):
        ax[1].plot([r["step"] for r in evals], [r[f"retrieval/{key}"] for r in evals], style, label=key)
        if evals:
            ax[1].axhline(evals[-1][f"retrieval/chance_{key}"], ls="--", lw=0.8, color="grey")
    ax[1].set_xlabel("step"), ax[1].set_title("held-out image->text retrieval (dashed: chance)"), ax[1].legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    m, p, nan = cfg.model, cfg.pretrain, float("nan")
    rows = [
        [
            r["step"],
            f"{r['retrieval/top1']:.1%}",
            f"{r['retrieval/chance_top1']:.1%}",
            f"{r['retrieval/top5']:.1%}",
            f"{r['retrieval/chance_top5']:.1%}",
            f"{r.get('retrieval/position_top1', nan):.1%} / {r.get('retrieval/position_top5', nan):.1%}",
            int(r["retrieval/n"]),
        ]
        for r in evals
    ]
    rate = steps[-1].get("samples_per_s", float("nan")) if steps else float("nan")
    return [
        ("heading", "Pretraining"),
        (
            "text",
            f"Encoder {m.encoder} (channels {m.channels}), patches {p.patch_size}, batch {p.batch_size}, "
            f"{p.steps} steps, lr {p.lr}; loss = CLIP(v1, t) + CLIP(v2, t) + {cfg.loss.image_weight}·"
            f"{cfg.loss.image_image}(v1, v2); {rate:.1f} samples/s.",
        ),
        ("figure", (figure, "Loss terms and held-out retrieval during pretraining")),
        (
            "table",
            (
                [
                    "step",
                    "top-1",
                    "chance top-1",
                    "top-5",
                    "chance top-5",
                    "modality + position only (top-1 / top-5)",
                    "held-out patches",
                ],
                rows,
            ),
        ),
    ]


def _caption_blocks(captions: dict[str, Any]) -> list:
    stats, cap, emb = captions["stats"], captions["run"], captions["embed"]
    rng = np.random.default_rng(0)
    rows = []
    for modality in ("CT", "MRI", "EM"):
        recs = [r for r in captions["records"] if r["modality"] == modality]
        for j in rng.choice(len(recs), size=min(2, len(recs)), replace=False) if recs else []:
            rows.append([recs[j]["volume"], ",".join(map(str, recs[j]["start"])), recs[j]["text"]])
    rate = f"{cap['per_second']:.0f} patches/s" if cap["written"] else "all cached"
    enc = f"{emb['per_second']:.0f} texts/s" if emb["encoded"] else "all cached"
    return [
        ("heading", "Generated text"),
        (
            "text",
            f"{stats['captions']} captions by the offline 'describe' captioner ({rate}); "
            f"{stats['distinct']:.0%} distinct, {stats['mean_words']:.0f} words on average. "
            f"{emb['unique']} distinct texts embedded with the frozen text encoder ({enc}).",
        ),
        ("table", (["volume", "box start (x,y,z)", "caption"], rows)),
    ]


def _blocks(index: dict[str, Any], timings: dict[str, float], montage: Path, views: Path) -> list:
    rows = [
        [
            c["id"],
            c["group"],
            c["modality"],
            "synthetic" if c["synthetic"] else "real",
            "×".join(map(str, c["shape"])),
            " × ".join(f"{s:.3g}" for s in c["spacing"]) + f" {c['unit']}",
            "yes" if "label" in c["files"] else "no",
        ]
        for c in index["cases"]
    ]
    n_real = sum(not c["synthetic"] for c in index["cases"])
    return [
        ("heading", "Example corpus"),
        (
            "text",
            f"{len(rows)} volumes ({n_real} real, {len(rows) - n_real} synthetic), reoriented to RAS and "
            "normalised per modality (CT: HU window -> [0, 1]; MRI: foreground z-score; EM: [0, 1]).",
        ),
        ("table", (["case", "group", "modality", "kind", "shape (RAS)", "spacing", "labels"], rows)),
        ("figure", (montage, "Central axial slice of every cached volume, label map outlined where there is one")),
        ("heading", "Two-view pretraining patches"),
        (
            "figure",
            (
                views,
                "Central slices of two augmented views of the same random patches, as pretraining makes them: "
                "top, view 1 (paired with the caption: no mirror, turn or crop); bottom, view 2 (full augmentation)",
            ),
        ),
        ("heading", "Timings"),
        ("table", (["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])),
    ]


def _montage(cache: VolumeCache, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cache)
    cols = 6
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(2.4 * cols, 2.6 * ((n + cols - 1) // cols)))
    for ax in np.ravel(axes):
        ax.axis("off")
    for i, ax in enumerate(np.ravel(axes)[:n]):
        z = cache.shape(i)[2] // 2
        img = np.asarray(cache.image(i)[0, :, :, z]).T
        ax.imshow(img, cmap="gray", origin="lower", aspect="auto")
        if "label" in cache.entries[i]["files"]:
            lab = np.asarray(cache.label(i)[:, :, z]).T
            ax.contour(lab > 0, levels=[0.5], colors="orange", linewidths=0.6, origin="lower")
        ax.set_title(cache.entries[i]["id"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _two_view_figure(cache: VolumeCache, cfg: Config, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, consistent = cfg.pretrain.patch_size, cfg.augment.caption_consistent
    data = TwoViewPatchDataset(cache, size, cfg.augment, 6, cfg.seed, caption_consistent=consistent)
    fig, axes = plt.subplots(2, 6, figsize=(14, 5))
    for i in range(6):
        item = data[i]
        for row, key in enumerate(("view1", "view2")):
            v = item[key][0]
            axes[row, i].imshow(v[:, :, v.shape[2] // 2].T.numpy(), cmap="gray", origin="lower")
            axes[row, i].axis("off")
        axes[0, i].set_title(cache.entries[item["case"]]["id"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
