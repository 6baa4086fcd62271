"""Oracle captions: the organs in each box with their shares, from the labelled twin of the unlabelled phantoms."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gtgm.cli import main
from gtgm.config import CaptionConfig
from gtgm.data.examples import write_examples
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import GtgmError
from gtgm.text.captioners import create_captioner
from gtgm.text.captions import read_captions, run_captioning

SPACING = "preprocess.group_spacing={ct_unlabeled: [8, 8, 8]}"


def test_oracle_captions_state_the_twin_labels_shares(tmp_path):
    write_examples(tmp_path / "ex", n_ct=0, n_em=0, n_ct_unlabeled=2, progress=False)
    full = json.loads((tmp_path / "ex" / "dataset.json").read_text())
    assert not any(
        "label" in e for e in full["training"] if e["group"] == "ct_unlabeled"
    )  # the corpus stays unlabelled
    main_ds = tmp_path / "main"
    unlabelled = [e for e in full["training"] if e["group"] == "ct_unlabeled"]
    for e in unlabelled:
        (main_ds / e["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "ex" / e["image"], main_ds / e["image"])
    (main_ds / "dataset.json").write_text(json.dumps({**full, "training": unlabelled, "numTraining": 2}))
    for src, out in ((main_ds, "cache"), (tmp_path / "ex" / "oracle", "oracle_cache")):
        assert main(["data", "preprocess", str(src), "--out", str(tmp_path / out), SPACING]) == 0
    cfg = CaptionConfig(content="oracle", oracle_cache=str(tmp_path / "oracle_cache"), step={"CT": [8, 8, 8]})
    captioner = create_captioner(cfg)
    run_captioning(VolumeCache(tmp_path / "cache"), captioner, tmp_path / "oracle.jsonl", cfg, progress=False)
    records = read_captions(tmp_path / "oracle.jsonl")
    assert records and all(r["captioner"] == "describe:oracle" for r in records)
    twin = VolumeCache(tmp_path / "oracle_cache")
    liver = [r for r in records if "liver" in r["text"]]
    assert liver, "no box holds liver"
    r = liver[0]
    i = [e["id"] for e in twin.entries].index(r["volume"])
    label = read_patch(twin.label(i), r["start"], r["size"], 0)
    share = float((label == 1).mean())  # the box lies inside the volume for this check
    assert f"liver {int(round(share * 20)) * 5}%" in r["text"] or share < 0.05
    assert "It holds" in r["text"] and "HU" not in r["text"]  # organ shares instead of intensity clauses
    with pytest.raises(GtgmError, match="needs caption.oracle_cache"):
        create_captioner(CaptionConfig(content="oracle"))
    assert np.all([isinstance(r["text"], str) for r in records])
