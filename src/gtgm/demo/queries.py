"""The demo's zero-shot queries and caption audit, and the figure that says whether queries mean anything.

:func:`class_rank_correlation`: for prompts naming a measurable CT class (in the captions' own words, e.g.
"CT patch. It is mostly bone-like density."), Spearman's ρ between each window's query score and that class's
measured share of the window's voxels (the Hounsfield bands of :data:`gtgm.data.measure.HU_BANDS`),
over every window of the given volumes. ρ near 1: the query ranks windows by the class it names. The control is
the same architecture with random weights and the run's text encoder (:func:`gtgm.infer.query.load_query_model`
``random_init``): whatever ρ it reaches comes from the architecture and the prompt, not from pretraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gtgm.data.measure import HU_BANDS
from gtgm.text.audit import pct
from gtgm.text.captioners.describe import CLASS_PROMPTS

FIGURE_PROMPTS = 3  # the first three of CLASS_PROMPTS get a map in the demo report, the last is their negative


def window_shares(image: np.ndarray, window: list[float], starts: list[list[int]], patch: list[int]) -> np.ndarray:
    """(W, B) share of each window's voxels in each Hounsfield band (B = the bands of ``HU_BANDS``, in order);
    ``image``: (X, Y, Z) CT normalised with the HU ``window`` (x = (HU - lo) / (hi - lo))."""
    lo, hi = window
    hu = image * (hi - lo) + lo
    out = np.zeros((len(starts), len(HU_BANDS)))
    for w, (x, y, z) in enumerate(starts):
        v = hu[x : x + patch[0], y : y + patch[1], z : z + patch[2]]
        out[w] = [((v >= a) & (v < b)).mean() for a, b in HU_BANDS.values()]
    return out


def class_rank_correlation(qm: Any, volumes: list[Path], prompts: dict[str, str] = CLASS_PROMPTS) -> dict[str, Any]:
    """Per class: ``{"prompt", "rho", "rho_softmax", "n"}`` over every window of ``volumes`` (CT NIfTI files), stride
    half a patch, at the run's CT pretraining spacing. ``rho``: of the cosine score; ``rho_softmax``: of the
    CLIP-style probability of the prompt among all ``prompts`` (softmax of scale · cosine, the other classes as
    negatives); ``margin``: ``rho_softmax`` minus the best ρ any other prompt's probability reaches with this class's
    share (> 0: the prompt naming the class ranks windows by it better than every other prompt does; windows
    overlap, so ρ of a random network is not 0 and the margin is the fairer test). None where the share is
    constant."""
    from gtgm.infer.prepare import input_cases, prepare_input
    from gtgm.infer.query import query_preprocessing, score_windows

    meta = query_preprocessing(qm, "CT", None)
    step = [max(1, p // 2) for p in qm.patch]
    scores, shares = [], []
    for case in input_cases(volumes, "CT"):
        normed, _, restore = prepare_input(meta, case)
        s, starts = score_windows(qm, normed, list(prompts.values()), [], step, progress=False, name=case.id)
        scores.append(s)
        shares.append(window_shares(normed[0], restore.normalization[0]["window"], starts, qm.patch))
    return rank_statistics(np.concatenate(scores), np.concatenate(shares), qm.scale, prompts)


def rank_statistics(score: np.ndarray, share: np.ndarray, scale: float, prompts: dict[str, str]) -> dict[str, Any]:
    """The figures of :func:`class_rank_correlation` from its two tables: ``score`` (W, P) cosine of each window
    with each prompt (P = ``prompts``, keyed by the Hounsfield band each names), ``share`` (W, B) each window's share
    of each band of ``HU_BANDS``. ``prob`` = softmax over prompts of ``scale`` · ``score``; per prompt k naming band
    b: ρ(score[:, k], share[:, b]), ρ(prob[:, k], share[:, b]) and margin = that minus max over j ≠ k of
    ρ(prob[:, j], share[:, b]) (Spearman's ρ; None where undefined)."""
    logits = scale * score
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    bands = list(HU_BANDS)
    out = {}
    for k, (band, prompt) in enumerate(prompts.items()):
        measured = share[:, bands.index(band)]
        if np.ptp(measured) == 0:
            out[band] = {"prompt": prompt, "rho": None, "rho_softmax": None, "margin": None, "n": len(measured)}
            continue
        rho, rho_softmax = _rho(score[:, k], measured), _rho(prob[:, k], measured)
        others = [_rho(prob[:, j], measured) for j in range(len(prompts)) if j != k]
        others = [r for r in others if r is not None]
        margin = rho_softmax - max(others) if rho_softmax is not None and others else None
        out[band] = {"prompt": prompt, "rho": rho, "rho_softmax": rho_softmax, "margin": margin, "n": len(measured)}
    return out


def _rho(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's ρ, None when it is undefined (a constant score)."""
    from scipy.stats import spearmanr

    value = float(spearmanr(x, y)[0])
    return value if np.isfinite(value) else None


def demo_query(
    out: Path, run: Path, held_out: list[Path], progress: bool, convention: str = "radiological"
) -> dict[str, Any]:
    """Query maps of the first held-out phantom, ρ per class for the run and the random-init control, and the
    audit of the demo's captions; returns what the report shows."""
    from gtgm.fsutil import write_json
    from gtgm.infer.query import load_query_model, query_volumes
    from gtgm.text.audit import run_audit

    prompts = list(CLASS_PROMPTS.values())
    shown, negatives = prompts[:FIGURE_PROMPTS], prompts[FIGURE_PROMPTS:]
    written = query_volumes(
        run, shown, held_out[:1], out / "query", negatives=negatives, progress=progress, convention=convention
    )
    rho = {
        "pretrained": class_rank_correlation(load_query_model(run), held_out),
        "random init": class_rank_correlation(load_query_model(run, random_init=True), held_out),
    }
    write_json(out / "query" / "rank_correlation.json", {"volumes": [str(p) for p in held_out], **rho})
    audit = run_audit(out / "captions.jsonl", out / "cache", out / "audit", progress=progress)
    return {"query": next(iter(written.values())), "rho": rho, "volumes": held_out, "audit": audit["summary"]}


def query_blocks(out: Path, result: dict[str, Any]) -> list:
    """The report's "Zero-shot text queries" and "Caption audit" sections."""
    if not result:
        return []
    fmt = lambda r: "n/a" if r is None else f"{r:+.2f}"  # noqa: E731
    pre, control = result["rho"]["pretrained"], result["rho"]["random init"]
    keys = ("rho", "rho_softmax", "margin")
    rows = [
        [band, f"`{v['prompt']}`", *(fmt(r[band][k]) for k in keys for r in (pre, control)), v["n"]]
        for band, v in pre.items()
    ]
    names = ", ".join(p.name for p in result["volumes"])
    audit_rows = [
        [name, s["captions"], s["statements"], *(pct(s[k]) for k in ("supported", "contradicted", "not_checkable"))]
        for name, s in result["audit"].items()
    ]
    figure = result["query"]["figure"]
    return [
        ("heading", "Zero-shot text queries"),
        (
            "text",
            f"`gtgm query` with the pretrained run on held-out CT phantoms ({names}; boxes of their volumes were "
            "kept from pretraining): per window of the pretraining patch size (stride half a patch), the cosine "
            "between the window's image embedding and the prompt's text embedding. Spearman ρ between each "
            "window's score and the measured share of the class the prompt names, over all windows; the control "
            "is the same network with random weights (same text encoder). ρ softmax: of the CLIP-style probability "
            "of the prompt among the four class prompts (the others as negatives); margin: ρ softmax minus the best "
            "ρ any other prompt reaches with that class's share (> 0: the prompt naming the class ranks windows "
            "by it better than every other prompt; windows overlap, so even a random network's ρ is not 0). Maps "
            "(the probabilities of three prompts among the four) and top windows: "
            f"[{(out / 'query').relative_to(out)}]({(out / 'query').relative_to(out)}).",
        ),
        (
            "table",
            (
                [
                    "measured class",
                    "prompt",
                    "ρ cosine",
                    "random init",
                    "ρ softmax",
                    "random init",
                    "margin",
                    "random init",
                    "windows",
                ],
                rows,
            ),
        ),
        (
            "figure",
            (
                figure,
                "Query maps over the first held-out phantom (probability of each prompt among the four class "
                "prompts), through each prompt's best window",
            ),
        ),
        ("heading", "Caption audit"),
        (
            "text",
            "`gtgm audit`: every captioned box re-measured from the cache and each checkable statement of its "
            "caption (modality, position words, Hounsfield-band shares and the dominant band, MRI signal shares, "
            "EM membranes and cells, edges, symmetry, bright structures) compared with the measurement. "
            "Details and contradictions: [audit/audit.md](audit/audit.md).",
        ),
        (
            "table",
            (
                ["captioner", "captions", "statements", "supported", "contradicted", "sentences not checkable"],
                audit_rows,
            ),
        ),
    ]
