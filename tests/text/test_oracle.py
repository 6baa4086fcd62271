"""Oracle captions: the organs in each box with their shares, from the labelled twin of the unlabelled phantoms."""

from __future__ import annotations

import json
import shutil

import pytest

from gtgm.cli import main
from gtgm.config import CaptionConfig
from gtgm.data.examples import write_examples
from gtgm.data.patches import VolumeCache, read_patch
from gtgm.errors import ConfigError, GtgmError
from gtgm.text.captioners import create_captioner
from gtgm.text.captioners.describe import pct
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
    ids = [e["id"] for e in twin.entries]

    def liver_share(r):  # over the box's voxels inside the volume, as the caption counts them
        i = ids.index(r["volume"])
        hi = [min(s + n, d) for s, n, d in zip(r["start"], r["size"], twin.entries[i]["shape"])]
        return float((read_patch(twin.label(i), r["start"], [h - s for s, h in zip(r["start"], hi)], 0) == 1).mean())

    r = max(records, key=liver_share)
    share = liver_share(r)
    assert share > 0.03, "no box holds liver"  # (at 8 mm one box holds most of the body)
    assert f"liver {pct(share)}" in r["text"]  # the stated share is the twin label's
    assert "It holds" in r["text"] and "HU" not in r["text"]  # organ shares instead of intensity clauses
    with pytest.raises(GtgmError, match="needs caption.oracle_cache"):
        create_captioner(CaptionConfig(content="oracle"))
    with pytest.raises(ConfigError, match="variant of the describe captioner"):
        create_captioner(CaptionConfig(content="position", captioner="openai"))
