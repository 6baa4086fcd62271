"""Statements read from free text and checked against measurements (no volumes needed)."""

from __future__ import annotations

from gtgm.data.measure import HU_BANDS
from gtgm.text.claims import check_caption, parts, sentences


def _ct(**shares: float) -> dict:
    bands = dict.fromkeys(HU_BANDS, 0.0)
    names = {
        "air": "air-density",
        "soft": "soft-tissue or fluid density",
        "fat": "fat-density",
        "bone": "bone-like density",
    }
    bands.update({names[k]: v for k, v in shares.items()})
    position = {"lr": "left", "ap": "anterior", "si": "superior", "radial": "peripheral"}
    return {"modality": "CT", "position": position, "ct": bands, "edges": 0.1, "symmetry": 0.1, "components": 1}


TEXT = (
    "CT patch from the superior left anterior part of the volume, peripheral in the axial plane. "
    "It is mostly air-density (55%); it also contains soft-tissue or fluid density (25%) and fat-density (<5%). "
    "It is left-right asymmetric. It has moderately many edges. A single connected bright structure is present."
)


def test_a_true_caption_holds_statement_by_statement():
    m = _ct(air=0.56, soft=0.24, fat=0.02)
    result = check_caption(TEXT, m)
    kinds = sorted({s["kind"] for s in result["statements"]})
    assert kinds == ["ct-dominant", "ct-share", "edges", "modality", "position", "structures", "symmetry"]
    assert result["score"] == 1.0 and result["not_checkable"] == []
    # "left-right asymmetric" is the symmetry statement, not a laterality claim
    assert [s["claim"] for s in result["statements"] if s["kind"] == "position"] == [
        "superior",
        "left",
        "anterior",
        "peripheral",
    ]


def test_each_false_statement_is_named_with_its_measurement():
    m = _ct(fat=0.6, soft=0.3, air=0.05)
    m["position"]["lr"] = "right"
    m["components"] = 3
    wrong = {(s["kind"], str(s["claim"])): s for s in check_caption(TEXT, m)["statements"] if not s["holds"]}
    assert ("position", "left") in wrong and wrong[("position", "left")]["measured"] == "right"
    assert ("ct-dominant", "air-density") in wrong and wrong[("ct-dominant", "air-density")][
        "measured"
    ] == "fat-density"
    assert ("ct-share", "air-density 55%") in wrong
    assert ("ct-share", "fat-density <5%") in wrong  # 60 % measured
    assert ("structures", "1") in wrong
    assert wrong[("ct-share", "air-density 55%")]["statement"] == "It is mostly air-density (55%)"


def test_free_text_and_other_modalities():
    m = _ct(soft=0.9)
    result = check_caption("The image shows the liver. Mostly soft tissue, about 92.5% of it.", m)
    assert result["not_checkable"] == ["The image shows the liver."]
    assert {s["kind"] for s in result["statements"]} == {"ct-dominant", "ct-share"} and result["score"] == 1.0
    mri = {"modality": "MRI", "position": m["position"], "edges": 0.0, "symmetry": 0.9, "components": 0}
    mri["mri"] = {"background": 0.95, "bright": 0.0, "dark": 0.01, "tissue_std": 0.2, "tissue_mean": 0.0}
    result = check_caption(
        "MRI patch. It is almost entirely background without signal. No distinct bright structure.", mri
    )
    assert [s["holds"] for s in result["statements"]] == [True, True, True]
    assert check_caption("EM patch with dense membranes.", mri)["statements"][0] == {
        "kind": "modality",
        "statement": "EM patch with dense membranes.",
        "claim": "EM",
        "measured": "MRI",
        "holds": False,
    }


def test_sentence_and_part_splitting():
    assert sentences("A is 2.5 mm. B; C!  ") == ["A is 2.5 mm.", "B", "C!"]
    assert parts("mostly fat (40%), with air (10%) and high-density (100 to 300 HU) (5%)") == [
        "mostly fat (40%)",
        "with air (10%)",
        "high-density (100 to 300 HU) (5%)",
    ]


def _mri(**over: float) -> dict:
    s = {"background": 0.2, "bright": 0.1, "dark": 0.05, "tissue_std": 0.3, "tissue_mean": 0.0, **over}
    position = {"lr": "left", "ap": "anterior", "si": "superior", "radial": "peripheral"}
    return {"modality": "MRI", "position": position, "mri": s, "edges": 0.2, "symmetry": 0.5, "components": 2}


def _read(text: str, m: dict) -> dict:
    return {(s["kind"], str(s["claim"])): s["holds"] for s in check_caption(text, m)["statements"]}


def test_percentages_go_with_the_term_they_quantify():
    m = _mri()
    assert _read("Tissue occupies 80% with bright areas of 10%.", m) == {
        ("mri-share", "tissue 80%"): True,
        ("mri-share", "hyperintense 10%"): True,
    }
    assert _read("With 10% hyperintense and 5% hypointense voxels.", m) == {
        ("mri-share", "hyperintense 10%"): True,
        ("mri-share", "hypointense 5%"): True,
    }
    ct = _ct(soft=0.7, air=0.1)
    assert _read("Soft tissue makes up 70% while air is 10%.", ct) == {
        ("ct-share", "soft-tissue or fluid density 70%"): True,
        ("ct-share", "air-density 10%"): True,
    }
    # a dominance word anywhere, ties count as the largest class
    assert _read("In this CT patch, bone dominates.", _ct(bone=0.4, soft=0.4))[("ct-dominant", "bone-like density")]


def test_negated_statements_are_not_read_as_claims():
    m = _mri()
    kinds = {k for k, _ in _read("It is not symmetric. There are not many edges. Signal is non-homogeneous.", m)}
    assert kinds == set()
    assert _read("This is not a CT image but an MRI.", m) == {("modality", "MRI"): True}
    ct = _ct(soft=0.97, bone=0.03)
    # "no calcification" is an absence claim about bone, not about the soft tissue named first
    assert _read("Mostly soft tissue with no calcification.", ct) == {
        ("ct-dominant", "soft-tissue or fluid density"): True,
        ("ct-share", "no bone-like density"): False,
    }
    # "left-right" / "left to right" are not laterality; "lower attenuation" is not a position
    assert _read("Fat is of lower attenuation, asymmetric from left to right.", ct) == {
        ("symmetry", "asymmetric"): True
    }


def test_em_sizes_in_other_units_and_levels():
    em = {"modality": "EM", "position": {"radial": "central", "section_range": (0, 15)}, "unit": "nm"}
    em.update(edges=0.3, symmetry=0.1, components=3)
    em["em"] = {"membrane": 0.2, "cells": 3, "diameter": 400.0, "persistence": 0.5}
    assert _read("Cell profiles of 0.4 µm across.", em) == {("em-cells", "diameter 400"): True}
    assert _read("About 30% cytoplasm, membranes 20%.", em) == {("em-membranes", "20%"): True}
    mri = _mri(tissue_mean=0.0)
    assert _read("High-signal foci on an intermediate mean signal background.", mri)[("mri-level", "intermediate")]
