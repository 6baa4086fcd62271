"""``gtgm query``: maps in the input's geometry, prompts and negatives, clear errors; the demo's query section."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from gtgm.cli import main
from tests.conftest import save_nifti


def _ct_volume(path, affine, shape=(64, 64, 20)):
    """A CT-like volume: air around a soft-tissue ellipse with a bone disc (HU)."""
    x, y, _ = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[(x / 0.8) ** 2 + (y / 0.6) ** 2 < 1] = 40
    hu[(x - 0.2) ** 2 + y**2 < 0.04] = 700
    return save_nifti(path, hu, affine)


@pytest.mark.slow
def test_query_maps_keep_the_input_geometry(demo_run, tmp_path, lps_affine):
    volume = _ct_volume(tmp_path / "lps.nii.gz", lps_affine)  # LPS, 0.8 x 0.8 x 3 mm, non-zero origin
    out = tmp_path / "q"
    prompts = ["CT patch. It is mostly bone-like density.", "--also", "CT patch. It is mostly air-density."]
    args = ["query", str(demo_run / "pretrain"), *prompts, str(volume), "--out", str(out)]
    assert main([*args, "--spacing", "1.5", "1.5", "1.5", "--stride", "8", "--top-k", "3"]) == 0
    src = nib.load(volume)
    for k in (1, 2):
        m = nib.load(out / f"lps_q{k}.nii.gz")
        assert m.shape == src.shape and np.array_equal(m.affine, src.affine)
        assert m.get_data_dtype() == np.float32
        values = np.asarray(m.dataobj)
        assert np.isfinite(values).all() and -1.0 <= values.min() <= values.max() <= 1.0  # cosines
    top = json.loads((out / "lps_top.json").read_text())
    assert [t["prompt"] for t in top] == [prompts[0], prompts[2]]
    best = top[0]["top"]
    assert len(best) == 3 and best[0]["score"] >= best[1]["score"] >= best[2]["score"]
    lo, hi = best[0]["input_voxels"]
    assert all(0 <= a <= b < n for a, b, n in zip(lo, hi, src.shape))
    assert (out / "lps.png").stat().st_size > 0
    settings = json.loads((out / "query.json").read_text())
    assert settings["spacing"] == [1.5, 1.5, 1.5] and settings["stride"] == [8, 8, 8]

    # negatives: a softmax over the prompts, so each map is a probability
    neg = tmp_path / "neg"
    args = [
        "query",
        str(demo_run / "pretrain"),
        prompts[0],
        str(volume),
        "--out",
        str(neg),
        "--spacing",
        "1.5",
        "1.5",
        "1.5",
    ]
    assert main([*args, "--negatives", "CT patch. It is mostly fat-density.", "MRI patch."]) == 0
    p = np.asarray(nib.load(neg / "lps_q1.nii.gz").dataobj)
    assert 0.0 <= p.min() <= p.max() <= 1.0
    assert json.loads((neg / "query.json").read_text())["score"] == "softmax over prompts"


def test_query_errors_name_the_cause(demo_run, tmp_path, capsys, lps_affine):
    run, volume = demo_run / "pretrain", _ct_volume(tmp_path / "v.nii.gz", lps_affine)
    out = tmp_path / "q"
    assert main(["query", str(run), "  ", str(volume), "--out", str(out)]) == 1
    assert "prompt 1 is empty" in capsys.readouterr().err
    small = _ct_volume(tmp_path / "small.nii.gz", lps_affine, shape=(12, 12, 4))
    assert main(["query", str(run), "bone", str(small), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "small.nii.gz" in err and "smaller than one query window" in err
    other = tmp_path / "other_run"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    info = json.loads((other / "encoder.json").read_text())
    info["text_encoder"] = {**info["text_encoder"], "name": "some-other-encoder", "pooling": "cls"}
    (other / "encoder.json").write_text(json.dumps(info))
    assert main(["query", str(other), "bone", str(volume), "--out", str(out)]) == 1
    assert "pretrained with text encoder 'some-other-encoder' (cls pooling" in capsys.readouterr().err
    assert main(["query", str(run), "bone", str(volume), "--out", str(out), "--text-encoder", str(tmp_path)]) == 1
    assert "text encoder folder not found" in capsys.readouterr().err
    assert main(["query", str(tmp_path), "bone", str(volume), "--out", str(out)]) == 1
    assert "no encoder.json; give the folder of a finished gtgm pretrain run" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_demo_reports_queries_with_a_random_init_control_and_the_audit(demo_run):
    rho = json.loads((demo_run / "query" / "rank_correlation.json").read_text())
    assert (
        set(rho["pretrained"])
        == set(rho["random init"])
        == {
            "bone-like density",
            "air-density",
            "fat-density",
            "soft-tissue or fluid density",
        }
    )
    assert all(v["n"] > 10 for v in rho["pretrained"].values())
    report = (demo_run / "report.md").read_text()
    assert "## Zero-shot text queries" in report and "ρ cosine, random init" in report
    assert "## Caption audit" in report and "(audit/audit.md)" in report
    assert len(list((demo_run / "query").glob("*_q*.nii.gz"))) == 3
