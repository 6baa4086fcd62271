"""Fine-tuning: pretrained weights arrive, splits, sampling, loss, predict geometry, evaluate, study."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from gtgm.cli import main
from gtgm.config import CONFIG_DIR, FinetuneConfig, ModelConfig, PreprocessConfig, load_config
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import IGNORE, make_split
from gtgm.errors import ConfigError, GtgmError
from gtgm.fsutil import write_json
from gtgm.infer.sliding import predict_array
from gtgm.models.checkpoint import load_weights, save_checkpoint
from gtgm.models.encoders import segmenter_state_dict
from gtgm.models.registry import create_encoder, create_segmenter
from gtgm.models.segmenters import load_encoder_weights
from gtgm.train.logs import read_log
from gtgm.train.losses import seg_loss
from gtgm.train.segdata import SegPatches
from gtgm.train.tasks import class_weights
from tests.conftest import private_cache, save_nifti


@pytest.mark.parametrize("name, kw", [("resunet", {"channels": [4, 8, 16]}), ("swinunetr", {"feature_size": 12})])
def test_pretrained_encoder_weights_arrive(tmp_path, name, kw):
    torch.manual_seed(1)
    encoder = create_encoder(name, **kw)
    weights = segmenter_state_dict(encoder)
    save_checkpoint(tmp_path / "encoder.pt", weights)
    write_json(tmp_path / "encoder.json", {"encoder": name})
    torch.manual_seed(2)
    seg = create_segmenter(name, 3, **kw)
    stats = load_encoder_weights(seg, tmp_path / "encoder.pt", name)
    assert stats == {"matched": len(weights), "missing": 0, "unexpected": 0}
    state = seg.state_dict()
    for k, v in weights.items():
        torch.testing.assert_close(state[k], v)


def test_other_architectures_are_refused(tmp_path):
    save_checkpoint(tmp_path / "encoder.pt", segmenter_state_dict(create_encoder("resunet", channels=[4, 8, 16])))
    with pytest.raises(GtgmError, match="other shapes"):
        load_encoder_weights(create_segmenter("resunet", 2, channels=[8, 16, 32]), tmp_path / "encoder.pt", "resunet")
    with pytest.raises(GtgmError, match="none of its"):
        load_encoder_weights(create_segmenter("swinunetr", 2, feature_size=12), tmp_path / "encoder.pt", "swinunetr")
    write_json(tmp_path / "encoder.json", {"encoder": "resunet"})
    with pytest.raises(GtgmError, match="pretrained for encoder 'resunet', but the segmenter is 'swinunetr'"):
        load_encoder_weights(create_segmenter("swinunetr", 2, feature_size=12), tmp_path / "encoder.pt", "swinunetr")


def test_masked_loss_equals_monai_dicece_without_ignored_voxels():
    logits = torch.randn(2, 3, 8, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    ref = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    assert seg_loss(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)
    masked = target.clone()
    masked[:, :, :4] = IGNORE
    part = seg_loss(logits[:, :, 4:], target[:, :, 4:])  # only the labelled half counts (CE exactly)
    assert seg_loss(logits, masked).item() == pytest.approx(part.item(), rel=0.05)


def test_class_weights_follow_the_power_and_keep_the_mean():
    counts = np.array([900, 90, 10, 0])
    w = class_weights(counts, 0.5).numpy()
    assert w[2] / w[0] == pytest.approx(np.sqrt(90), rel=1e-4)  # (share)^-0.5
    assert (w * np.maximum(counts, 1)).sum() == pytest.approx(np.maximum(counts, 1).sum(), rel=1e-4)
    np.testing.assert_allclose(class_weights(counts, 0.0).numpy(), 1.0)
    logits, target = torch.randn(1, 4, 6, 6, 6), torch.randint(0, 4, (1, 1, 6, 6, 6))
    wt = torch.tensor(w)
    ce = torch.nn.functional.cross_entropy
    extra = ce(logits, target[:, 0], weight=wt) - ce(logits, target[:, 0])
    assert (seg_loss(logits, target, wt) - seg_loss(logits, target)).item() == pytest.approx(extra.item(), abs=1e-5)


def test_predict_array_pads_small_inputs_with_the_minimum():
    """A model that answers each window's mean shows what the padding holds: each channel's minimum, not 0."""

    class WindowMean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).clone()

    image = np.random.default_rng(0).uniform(2.0, 3.0, size=(1, 10, 12, 7)).astype(np.float32)
    affs = predict_array(WindowMean(), image, [16, 16, 16], output="affinities")  # sigmoid of the output
    padded = np.pad(image[0], [(0, 6), (0, 4), (0, 9)], constant_values=image.min())
    assert affs.shape == (1, 10, 12, 7)
    np.testing.assert_allclose(affs, 1 / (1 + np.exp(-padded.mean())), rtol=1e-5)
    torch.manual_seed(0)
    model = create_segmenter("resunet", 3, channels=[4, 8, 16])
    probs = predict_array(model, image, [16, 16, 16], output="probabilities")
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(predict_array(model, image, [16, 16, 16]), probs.argmax(0))
    with pytest.raises(ValueError, match="unknown output"):
        predict_array(model, image, [16, 16, 16], output="logits")


def test_checkpoints_without_affine_norm_still_load(tmp_path, capsys):
    """best.pt files saved before model.norm_affine: predict reads the norm off the weights; a resume says why."""
    from gtgm.infer.predict import load_segmenter

    old = create_segmenter("resunet", 3, channels=[4, 8, 16], norm_affine=False)
    cfg = dataclasses.asdict(ModelConfig(channels=[4, 8, 16]))
    del cfg["norm_affine"]
    save_checkpoint(tmp_path / "best.pt", {"model": old.state_dict(), "model_config": cfg, "num_classes": 3})
    model, _ = load_segmenter(tmp_path / "best.pt", torch.device("cpu"))
    x = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(model(x), old.eval()(x))
    new = create_segmenter("resunet", 3, channels=[4, 8, 16])
    with pytest.raises(GtgmError, match="model.norm_affine=false"):
        load_weights(new, old.state_dict(), tmp_path / "last.pt")


def test_settings_are_checked_where_they_are_read():
    with pytest.raises(ConfigError, match="group_spacing.ct_phantom': expected 3 positive"):
        load_config(None, ["preprocess.group_spacing={ct_phantom: [5.5, 5.5]}"])
    with pytest.raises(ConfigError, match="study.arms': needs at least one"):
        load_config(None, ["study.arms=[]"])
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(None, ["study.arms=[finetuned]"])


def test_case_split_and_label_ratio(corpus):
    cache = VolumeCache(corpus / "cache", group="ct_phantom", labeled=True)
    split = make_split(cache, FinetuneConfig(label_ratio=0.01))
    ids = {k: [p.case for p in v] for k, v in split.items()}
    assert len(ids["train"]) == 1 and len(ids["test"]) == 1 and len(ids["val"]) == 1  # 4 cases: 30 % / 15 %, >= 1
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])
    full = make_split(cache, FinetuneConfig(label_ratio=1.0))
    assert len(full["train"]) == 2 and [p.case for p in full["test"]] == ids["test"]
    other = [[p.case for p in make_split(cache, FinetuneConfig(split_seed=s))["test"]] for s in (1, 2, 3)]
    assert any(o != ids["test"] for o in other)  # the split seed moves the test case


def test_region_split_is_spatially_disjoint(corpus):
    cache = VolumeCache(corpus / "cache", group="mni152_tissue", labeled=True)
    split = make_split(cache, FinetuneConfig(label_ratio=0.1))
    train, val, test = split["train"][0], split["val"][0], split["test"][0]
    assert train.hi[0] <= val.lo[0] and val.hi[0] <= test.lo[0]  # slabs along x never overlap
    assert len(train.slices) == round(0.1 * cache.shape(0)[2])
    data = SegPatches(cache, split["train"], FinetuneConfig(patch_size=[24, 24, 24], foreground_ratio=0.5), seed=0)
    gap = min(b - a for a, b in zip(train.slices, train.slices[1:]))
    for i in range(6):
        label = data[i]["label"][0].numpy()
        assert (label != IGNORE).any()  # the centre is on a labelled slice
        planes = np.flatnonzero((label != IGNORE).any(axis=(0, 1)))
        assert len(planes) <= -(-24 // gap)  # only the labelled slices inside the patch, the rest ignored
        assert all(b - a >= gap for a, b in zip(planes, planes[1:]))


def test_class_shift_moves_each_organ_by_its_own_offset(tiny_ct):
    cache = VolumeCache(tiny_ct / "cache", labeled=True)
    parts = make_split(cache, FinetuneConfig(split="cases", test_cases=["ct_3"]))["train"]
    f = FinetuneConfig(patch_size=[24, 24, 16], foreground_ratio=1.0)
    plain = SegPatches(cache, parts, f, seed=0)
    shifted = SegPatches(cache, parts, dataclasses.replace(f, class_shift=0.2), seed=0)
    offsets = []
    for i in range(3):
        a, b = plain[i], shifted[i]
        label = a["label"][0].numpy()
        assert np.array_equal(label, b["label"][0].numpy())  # same patch, same labels
        diff = (b["image"] - a["image"])[0].numpy()
        assert np.allclose(diff[label <= 0], 0)  # background and ignored voxels untouched
        for k in np.unique(label[label > 0]):
            d = diff[label == k]
            assert np.allclose(d, d[0], atol=1e-5) and abs(d[0]) <= 0.2  # one offset per organ, within U(-a, a)
            offsets.append(float(d[0]))
    assert len(set(np.round(offsets, 5))) > 3  # organs move by different amounts


def _fake_best(tmp_path, target_spacing):
    torch.manual_seed(0)
    model = ModelConfig(channels=[4, 8, 16])
    seg = create_segmenter("resunet", 3, channels=[4, 8, 16])
    save_checkpoint(
        tmp_path / "best.pt",
        {
            "model": seg.state_dict(),
            "model_config": model.__dict__,
            "num_classes": 3,
            "labels": {},
            "patch_size": [16, 16, 16],
            "preprocess": PreprocessConfig(target_spacing=target_spacing).__dict__,
            "modality": "MRI",
            "step": 1,
            "val_score": 0.0,
        },
    )
    return tmp_path / "best.pt"


@pytest.mark.parametrize("target_spacing", [None, [2.0, 2.0, 2.0]])
def test_predict_keeps_input_shape_and_affine(tmp_path, lps_affine, target_spacing):
    ckpt = _fake_best(tmp_path, target_spacing)
    oblique = lps_affine[:, [1, 0, 2, 3]]  # permuted axes: not RAS, anisotropic (0.8 x 0.8 x 3 mm)
    data = np.random.default_rng(0).normal(100, 20, (19, 23, 11)).astype(np.float32)
    save_nifti(tmp_path / "in" / "vol.nii.gz", data, oblique)
    assert main(["predict", str(ckpt), str(tmp_path / "in" / "vol.nii.gz"), "--out", str(tmp_path / "pred")]) == 0
    out = nib.load(str(tmp_path / "pred" / "vol.nii.gz"))
    src = nib.load(str(tmp_path / "in" / "vol.nii.gz"))
    assert out.shape == src.shape
    np.testing.assert_array_equal(out.affine, src.affine)
    assert np.asarray(out.dataobj).max() < 3


def test_a_predict_input_too_large_to_resample_names_what_predict_can_change(tmp_path, capsys, monkeypatch):
    ckpt = _fake_best(tmp_path, [0.5, 0.5, 0.5])
    save_nifti(tmp_path / "in" / "vol.nii.gz", np.zeros((8, 8, 8), np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    monkeypatch.setenv("GTGM_MEMORY_GB", "0.0001")  # the input (2 kB) fits; resampled to 64^3 (1 MB) it does not
    assert main(["predict", str(ckpt), str(tmp_path / "in" / "vol.nii.gz"), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "more than this machine can hold" in err and "crop" in err and "vol.nii.gz" in err
    assert "preprocess.target_spacing" not in err


def test_evaluate_writes_csv_and_json(tmp_path, capsys):
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    pred = ref.copy()
    pred[2:4] = 0
    save_nifti(tmp_path / "labels" / "case1.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "case1.nii.gz", pred)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "labels")]) == 0
    res = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert res["mean"]["1"]["dice"] == pytest.approx(2 * 32 / (32 + 64))
    assert (tmp_path / "pred" / "metrics.csv").read_text().splitlines()[0] == "case,class,dice,hd95"


@pytest.mark.slow
def test_finetune_and_tiny_study(corpus, tmp_path):
    common = [
        "finetune.steps=4",
        "finetune.val_every=2",
        "finetune.batch_size=2",
        "model.channels=[4,8,16]",
        "finetune.patch_size=[16,16,16]",
    ]
    enc = create_encoder("resunet", channels=[4, 8, 16])
    save_checkpoint(tmp_path / "encoder.pt", segmenter_state_dict(enc))
    code = main(
        [
            "finetune",
            str(corpus / "cache"),
            "--group",
            "ct_phantom",
            "--pretrained",
            str(tmp_path / "encoder.pt"),
            "--label-ratio",
            "0.1",
            "--out",
            str(tmp_path / "ft"),
            *common,
            "finetune.snapshot_every=2",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "ft" / "test_metrics.json").read_text())
    # snapshots for anytime curves: the model every 2 steps, what predict loads, logged with the training seconds
    snaps = [r for r in read_log(tmp_path / "ft") if "snapshot" in r]
    assert [r["snapshot"] for r in snaps] == ["snapshots/step_000002.pt", "snapshots/step_000004.pt"]
    assert 0 < snaps[0]["elapsed_s"] < snaps[1]["elapsed_s"] <= metrics["train_s"]
    assert torch.load(tmp_path / "ft" / snaps[0]["snapshot"], weights_only=True)["step"] == 2
    assert metrics["loaded"]["matched"] > 0 and len(metrics["train_cases"]) == 1
    assert set(metrics["test"]["dice"]) == {str(c) for c in range(1, 8)}
    assert (tmp_path / "ft" / "best.pt").is_file()
    cfg = load_config(
        "finetune/cpu-small",
        [
            f"finetune.cache={private_cache(corpus, tmp_path)}",
            f"study.out={tmp_path / 'study'}",
            "study.ratios=[1.0]",
            "study.seeds=[0]",
            "study.groups=[ct_phantom]",
            *common,
        ],
    )
    from gtgm.study.run import run_study

    report = run_study(cfg, str(tmp_path / "encoder.pt"), progress=False)
    text = report.read_text()
    assert "scratch" in text and "pretrained" in text and (tmp_path / "study" / "score_vs_ratio.png").is_file()
    assert "| liver | spleen |" in text and "class 1" not in text  # names from dataset.json
    assert "n = 1 run" in text and "± 0.000" not in text  # one seed: no fake spread
    assert "pretrained − scratch" in text and "Decision rule" in text  # paired per (seed, test case)
    assert run_study(cfg, str(tmp_path / "encoder.pt"), progress=False) == report  # finished runs are reused
    cfg.finetune.lr = 0.5
    with pytest.raises(GtgmError, match=r"holds a run made with other settings \(finetune.lr\)"):
        run_study(cfg, str(tmp_path / "encoder.pt"), progress=False)


def test_task_presets_load_and_check_the_data(corpus, tmp_path):

    from gtgm.train.finetune import Finetuner

    presets = sorted(p for p in (CONFIG_DIR / "finetune").glob("*.yaml") if not p.stem.endswith("-base"))
    assert len(presets) >= 12  # cpu-small + MSD Task01-10 + BTCV
    for path in presets:
        cfg = load_config(path)
        if cfg.finetune.task == "em":
            assert cfg.finetune.split == "region" and cfg.finetune.region_axis == 2, path
            assert cfg.finetune.label_slices == "block", path
        elif cfg.model.encoder == "swinunetr":
            assert all(s % 32 == 0 for s in cfg.finetune.patch_size), path
            assert cfg.finetune.task_labels and len(cfg.finetune.task_channels) == cfg.model.in_channels, path
    cfg = load_config(
        "finetune/msd-task09-spleen",
        [f"finetune.cache={corpus / 'cache'}", "finetune.group=ct_phantom", f"finetune.out={tmp_path / 'ft'}"],
    )
    with pytest.raises(GtgmError, match="differ from the preset's task_labels"):
        Finetuner(cfg, progress=False)
