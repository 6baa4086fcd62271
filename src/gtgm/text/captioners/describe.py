"""``describe``: the offline, image-grounded captioner. It measures the patch (:mod:`.measure`) and
writes a medical-style description of exactly those measurements.

Grounded by construction: every clause states a measured quantity (position, Hounsfield-band shares,
MRI signal shares and homogeneity, EM membrane density, cell size and orientation, edges, symmetry,
connected bright structures). Phrasing varies with the seed (several templates and synonyms per clause,
order of the secondary clauses shuffled) and is fixed by ``(seed, patch key)``. It never names a
finding it did not measure: no word for a tumour, lesion, mass or any pathology is in its vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gtgm.data.boxes import Patch
from gtgm.data.measure import measure

# zero-shot queries naming a measurable band in the captions' own words (the demo's and bench_query's)
CLASS_PROMPTS = {
    "bone-like density": "CT patch. It is mostly bone-like density.",
    "air-density": "CT patch. It is mostly air-density.",
    "fat-density": "CT patch. It is mostly fat-density.",
    "soft-tissue or fluid density": "CT patch. It is mostly soft-tissue or fluid density.",
}

VERSION = "2"  # 2: Hounsfield bands named by density, not by organ or contrast agent


def pct(f: float) -> str:
    """A share as a percentage rounded to 5 % ('<5%' for small non-zero shares)."""
    v = int(round(f * 20)) * 5
    return "<5%" if v == 0 and f > 0 else f"{v}%"


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _location(m: dict[str, Any], rng: np.random.Generator) -> str:
    p = m["position"]
    if m["modality"] == "EM":
        z0, z1 = p["section_range"]
        where = f"{p['radial']} part of the field of view"
        return _pick(rng, [f"from the {where}, sections {z0}-{z1}", f"in the {where} (sections {z0} to {z1})"])
    words = [w for w in (p["si"], p["lr"], p["ap"]) if w not in ("mid-level", "midline", "mid")]
    region = " ".join(words) if words else "central"
    return _pick(
        rng,
        [
            f"from the {region} part of the volume, {p['radial']} in the axial plane",
            f"located in the {region} region of the scan ({p['radial']})",
            f"taken from the {region} portion of the volume, {p['radial']} in-plane",
        ],
    )


def _ct(m: dict[str, Any], rng: np.random.Generator) -> list[str]:
    shares = sorted(((v, k) for k, v in m["ct"].items() if v >= 0.03), reverse=True)
    if not shares:
        return ["Attenuation is mixed with no dominant Hounsfield band."]
    (v0, b0), rest = shares[0], shares[1:]
    main = _pick(
        rng,
        [
            f"It is mostly {b0} ({pct(v0)})",
            f"Predominantly {b0} attenuation ({pct(v0)})",
            f"{b0.capitalize()} dominates ({pct(v0)})",
        ],
    )
    if rest:
        listed = _join([f"{k} ({pct(v)})" for v, k in rest])
        main += _pick(rng, [f", with {listed}", f", alongside {listed}", f"; it also contains {listed}"])
    return [main + "."]


def _mri(m: dict[str, Any], rng: np.random.Generator) -> list[str]:
    s = m["mri"]
    tissue = 1 - s["background"]
    if tissue < 0.1:
        return [
            _pick(
                rng, ["It is almost entirely background without signal.", "Nearly all of it is signal-free background."]
            )
        ]
    out = [
        _pick(
            rng,
            [
                f"Signal-bearing tissue fills {pct(tissue)} of the patch",
                f"Tissue with signal occupies {pct(tissue)}, the rest is background",
                f"About {pct(tissue)} of the patch contains tissue signal",
            ],
        )
    ]
    out[0] += _pick(
        rng,
        [
            f"; bright (hyperintense) areas cover {pct(s['bright'])} and dark (hypointense) areas {pct(s['dark'])}.",
            f", with {pct(s['bright'])} hyperintense and {pct(s['dark'])} hypointense voxels.",
        ],
    )
    homog = (
        "homogeneous" if s["tissue_std"] < 0.5 else "mildly heterogeneous" if s["tissue_std"] < 0.9 else "heterogeneous"
    )
    level = "high" if s["tissue_mean"] > 0.5 else "low" if s["tissue_mean"] < -0.5 else "intermediate"
    out.append(
        _pick(
            rng,
            [
                f"The tissue signal is {homog} and {level} on average.",
                f"Signal within the tissue is {homog}, of {level} mean intensity.",
            ],
        )
    )
    return out


def _em(m: dict[str, Any], rng: np.random.Generator) -> list[str]:
    s = m["em"]
    density = "sparse" if s["membrane"] < 0.15 else "moderately dense" if s["membrane"] < 0.3 else "dense"
    out = [
        _pick(
            rng,
            [
                f"Membranes are {density}, covering {pct(s['membrane'])} of the voxels.",
                f"{density.capitalize()} membrane labelling ({pct(s['membrane'])} of voxels).",
            ],
        )
    ]
    if s["cells"]:
        unit, d = m["unit"], f"{s['diameter']:.0f}"
        out.append(
            _pick(
                rng,
                [
                    f"Cell profiles are about {d} {unit} across, {s['cells']} in the central section.",
                    f"The central section shows {s['cells']} cell profiles of typical diameter {d} {unit}.",
                ],
            )
        )
    p = s["persistence"]
    out.append(
        "Processes run mostly across the sections."
        if p > 0.6
        else "Processes run obliquely to the sections."
        if p > 0.3
        else "Profiles change quickly between sections, so processes lie close to the section plane."
    )
    return out


def _common(m: dict[str, Any], rng: np.random.Generator) -> list[str]:
    e = m["edges"]
    edge = "few edges" if e < 0.05 else "moderately many edges" if e < 0.15 else "many sharp edges"
    out = [_pick(rng, [f"The patch shows {edge}.", f"It has {edge}."])]
    if m["symmetry"] > 0.8:
        out.append(_pick(rng, ["It is roughly left-right symmetric.", "Left and right halves look alike."]))
    elif m["symmetry"] < 0.2:
        out.append("It is left-right asymmetric.")
    n = m["components"]
    out.append(
        "No distinct bright structure stands out."
        if n == 0
        else "A single connected bright structure is present."
        if n == 1
        else f"{n} separate bright structures are present."
    )
    return out


def describe_measurements(m: dict[str, Any], rng: np.random.Generator, content: str = "full") -> str:
    """Turn :func:`measure` output into text; ``rng`` only chooses wording and clause order.

    ``content``: ``full`` (position, intensity / texture and the common clauses), or a content control of the
    study — ``position`` (the opening sentence: modality and where the patch lies, nothing about what it shows)
    or ``intensity`` (modality and the intensity / texture clauses, no position, no common clauses)."""
    opener = {
        "CT": ["CT patch", "Axial CT sub-volume", "CT region", "Patch of a CT scan"],
        "MRI": ["MRI patch", "MR sub-volume", "MRI region", "Patch of an MR image"],
        "EM": ["Electron microscopy sub-volume", "EM patch", "Serial-section EM region"],
    }[m["modality"]]
    first, where = _pick(rng, opener), _location(m, rng)  # (the full captions' draws, in their order)
    clauses = {"CT": _ct, "EM": _em}.get(m["modality"], _mri)(m, rng)
    if content == "position":
        return f"{first} {where}."
    if content == "intensity":
        return " ".join([f"{first}.", *clauses])
    extra = _common(m, rng)
    order = rng.permutation(len(extra))
    return " ".join([f"{first} {where}.", *clauses, *(extra[i] for i in order)])


class DescribeCaptioner:
    """Offline default captioner (see module docstring); ``content`` other than ``full`` names itself
    ``describe:<content>`` so that its captions never mix with full ones in a file."""

    version = VERSION

    def __init__(self, content: str = "full"):
        self.content = content
        self.name = "describe" if content == "full" else f"describe:{content}"

    def caption(self, patches: list[Patch], seed: int) -> list[str]:
        texts = []
        for patch in patches:
            m = measure(patch)
            m["unit"] = patch.unit
            z0 = patch.start[2]
            m["position"]["section_range"] = (max(z0, 0), min(z0 + patch.size[2], patch.volume_shape[2]) - 1)
            texts.append(describe_measurements(m, patch.rng(seed), self.content))
        return texts
