"""``gtgm query``: maps in the input's geometry, prompts and negatives, clear errors; the demo's query section."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from gtgm.cli import main
from gtgm.data.patches import grid_starts
from gtgm.errors import GtgmError
from gtgm.infer.query import blend, box_geometry, score_windows
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
    assert settings["stride"] == [8, 8, 8] and settings["volumes"]["lps"]["spacing"] == [1.5, 1.5, 1.5]
    assert settings["volumes"]["lps"]["maps"] == ["lps_q1.nii.gz", "lps_q2.nii.gz"]

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
    assert "## Zero-shot text queries" in report and "| ρ softmax | random init | margin |" in report
    assert all("margin" in v for v in rho["pretrained"].values())
    assert "## Caption audit" in report and "(audit/audit.md)" in report
    assert len(list((demo_run / "query").glob("*_q*.nii.gz"))) == 3


class _Stub:
    """A QueryModel stand-in with fixed unit embeddings: windows (W, 4), prompts (P, 4)."""

    patch, scale = [4, 4, 4], 10.0

    def __init__(self, n_texts: int):
        g = torch.Generator().manual_seed(0)
        self.texts = F.normalize(torch.randn(n_texts, 4, generator=g), dim=-1)
        self.windows = None

    def embed_windows(self, image, starts, batch, progress):
        g = torch.Generator().manual_seed(1)
        self.windows = F.normalize(torch.randn(len(starts), 4, generator=g), dim=-1)
        return self.windows

    def embed_texts(self, texts):
        return self.texts[: len(texts)]


def test_scores_are_cosines_or_a_softmax_over_the_prompts():
    image = np.zeros((1, 8, 8, 6), dtype=np.float32)
    stub = _Stub(3)
    cos, starts = score_windows(stub, image, ["a", "b"], [], [2, 2, 2])
    assert starts[0] == [0, 0, 0] and starts[-1] == [4, 4, 2] and len(starts) == 3 * 3 * 2
    np.testing.assert_allclose(cos, (stub.windows @ stub.texts[:2].T).numpy(), rtol=1e-6)
    prob, _ = score_windows(stub, image, ["a", "b"], ["negative"], [2, 2, 2])
    full = torch.softmax(stub.scale * stub.windows @ stub.texts.T, dim=1)  # over the prompts, per window
    np.testing.assert_allclose(prob, full[:, :2].numpy(), rtol=1e-5)
    assert (prob.sum(1) < 1).all()  # the negative takes its share
    with pytest.raises(GtgmError, match="smaller than one query window"):
        score_windows(stub, np.zeros((1, 3, 8, 8), np.float32), ["a"], [], [2, 2, 2])


def test_blend_interpolates_window_scores():
    starts = grid_starts([10, 10, 6], [4, 4, 4], [2, 2, 2])
    constant = blend(np.full((len(starts), 1), 0.3), starts, [4, 4, 4], [10, 10, 6])
    np.testing.assert_allclose(constant, 0.3, rtol=1e-5)
    ramp = blend(np.array([[s[0]] for s in starts], float), starts, [4, 4, 4], [10, 10, 6])[0]
    assert (np.diff(ramp[:, 5, 3]) >= -1e-9).all() and ramp[0, 5, 3] < ramp[-1, 5, 3]  # monotone along x


def test_box_geometry_bounds_the_input_voxels_a_window_covers(lps_affine):
    from types import SimpleNamespace

    work = np.diag([1.5, 1.5, 1.5, 1.0])  # a RAS 1.5 mm grid ...
    work[:3, 3] = [5.0, -10.0, -25.0]
    restore = SimpleNamespace(geometry={"work_affine": work})
    shape, start, patch = (40, 40, 12), [5, 6, 4], [8, 8, 8]
    box = box_geometry(start, patch, restore, lps_affine, shape)  # ... over an LPS 0.8 x 0.8 x 3 mm input
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    world = idx @ lps_affine[:3, :3].T + lps_affine[:3, 3]
    grid = (world - work[:3, 3]) @ np.linalg.inv(work[:3, :3]).T
    inside = ((grid >= np.array(start) - 0.5) & (grid < np.array(start) + np.array(patch) - 0.5)).all(1)
    lo, hi = np.array(box["input_voxels"])
    assert inside.any() and (idx[inside].min(0) >= lo).all() and (idx[inside].max(0) <= hi).all()
    assert ((idx[inside].min(0) - lo) <= 1).all() and ((hi - idx[inside].max(0)) <= 1).all()  # tight
    centre = (np.array(start) + (np.array(patch) - 1) / 2) * 1.5 + work[:3, 3]
    np.testing.assert_allclose(box["centre_mm"], centre, atol=0.01)


def test_stride_beyond_the_window_and_runs_without_text_are_refused(demo_run, tmp_path, capsys, lps_affine):
    volume = _ct_volume(tmp_path / "v.nii.gz", lps_affine)
    run = demo_run / "pretrain"
    assert main(["query", str(run), "bone", str(volume), "--out", str(tmp_path / "q"), "--stride", "40"]) == 1
    assert "--stride needs 1 or 3 integers from 1 to the window size" in capsys.readouterr().err
    image_only = tmp_path / "image_only"
    shutil.copytree(run, image_only, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    cfg = yaml.safe_load((image_only / "config.yaml").read_text())
    cfg["loss"]["text_weight"] = 0.0
    (image_only / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["query", str(image_only), "bone", str(volume), "--out", str(tmp_path / "q")]) == 1
    assert "pretrained without the image-text term" in capsys.readouterr().err


def test_thin_volumes_are_padded_and_unseen_modalities_are_named(demo_run, tmp_path, capsys, lps_affine):
    run = demo_run / "pretrain"
    thin = _ct_volume(tmp_path / "thin.nii.gz", lps_affine, shape=(24, 24, 4))  # 12 mm thick: under one window
    out = tmp_path / "q"
    assert main(["query", str(run), "bone", str(thin), "--out", str(out), "--top-k", "1"]) == 0
    assert "[query] warning:" in (err := capsys.readouterr().err) and "smaller than one window" in err
    m = nib.load(out / "thin_q1.nii.gz")
    src = nib.load(thin)
    assert m.shape == src.shape and np.array_equal(m.affine, src.affine)
    assert np.isfinite(np.asarray(m.dataobj)).all()
    lo, hi = json.loads((out / "thin_top.json").read_text())[0]["top"][0]["input_voxels"]
    assert all(0 <= a <= b < n for a, b, n in zip(lo, hi, src.shape))

    ct_only = tmp_path / "ct_only"
    shutil.copytree(run, ct_only, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    info = json.loads((ct_only / "encoder.json").read_text())
    info["spacing_by_modality"] = {"CT": info["spacing_by_modality"]["CT"]}
    (ct_only / "encoder.json").write_text(json.dumps(info))
    volume = _ct_volume(tmp_path / "v.nii.gz", lps_affine)
    argv = ["query", str(ct_only), "bone", str(volume), "--out", str(tmp_path / "mr"), "--top-k", "1"]
    assert main([*argv, "--modality", "MRI"]) == 0
    assert "pretrained on CT only, never on MRI" in capsys.readouterr().err
    argv[5] = str(tmp_path / "mr_spacing")  # a spacing given does not hide that the run never saw MRI
    assert main([*argv, "--modality", "MRI", "--spacing", "30", "30", "30"]) == 0
    err = capsys.readouterr().err
    assert "never on MRI" in err and "more than 2x off" in err and "smaller than one window" in err
    argv[5] = str(tmp_path / "absurd")  # a volume resampled to a voxel or two is refused
    assert main([*argv, "--spacing", "1000", "1000", "1000"]) == 1
    assert "more than 100x off" in capsys.readouterr().err and not (tmp_path / "absurd").exists()
    argv[5] = str(tmp_path / "em")
    assert main([*argv, "--modality", "EM"]) == 1
    assert "give --spacing" in capsys.readouterr().err and not (tmp_path / "em").exists()
