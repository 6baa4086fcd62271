"""The positive control (arm ``supervised``), per-arm recipes, the encoder re-warm-up and the study's diagnostics."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from gtgm.config import load_config
from gtgm.errors import ConfigError
from gtgm.models.checkpoint import load_state_dict
from gtgm.study.run import run_study
from gtgm.train.diagnostics import confusion_counts, encoder_drift, encoder_weights, feature_stats
from gtgm.train.finetune import Finetuner
from gtgm.train.optim import encoder_multiplier, warmup_cosine
from tests.conftest import private_cache
from tests.study.test_arms import TINY


def test_supervised_arm_is_trained_on_training_cases_only_and_keeps_the_encoder(corpus, tmp_path):
    cfg = load_config(
        "study/cpu-control",
        [
            f"finetune.cache={private_cache(corpus, tmp_path)}",
            f"study.out={tmp_path / 'study'}",
            "study.seeds=[0]",
            "study.pretrain_seeds=[0]",
            "study.curve_steps=[2, 4]",
            "study.arm_overrides={supervised: [finetune.freeze_encoder_steps=2]}",
            "study.readout=true",
            # the preset's 300-step source segmenters, validated every 2 steps, took minutes
            "study.supervised_overrides=[finetune.steps=4]",
            *TINY,
            "finetune.steps=4",
        ],
    )
    report = run_study(cfg, progress=False).read_text()
    root = tmp_path / "study"
    source = root / "pretrain" / "supervised_ct_phantom_seed0"
    weights = load_state_dict(source / "encoder.pt")
    assert weights and all(k.startswith("encoder.") for k in weights)  # encoder tensors only: the decoder starts fresh
    split = json.loads((source / "split.json").read_text())
    held_out = {p["id"] for k in ("val", "test") for p in split[k]}
    meta = json.loads((source / "encoder.json").read_text())
    assert meta["source"] == "supervised" and meta["train_cases"] == [p["id"] for p in split["train"]]
    assert len(meta["train_cases"]) > 1 and all(p["slices"] is None for p in split["train"])  # every training label
    assert not held_out & set(meta["train_cases"])
    run = yaml.safe_load((root / "ct_phantom" / "supervised" / "ratio0.01_seed0" / "config.yaml").read_text())
    assert run["finetune"]["pretrained"] == str(source / "encoder.pt")
    assert run["finetune"]["freeze_encoder_steps"] == 2  # the arm's own recipe
    scratch = yaml.safe_load((root / "ct_phantom" / "scratch" / "ratio0.01_seed0" / "config.yaml").read_text())
    assert scratch["finetune"]["freeze_encoder_steps"] == 0
    assert "supervised − scratch" in report and "| arm | label ratio | val @ 2 | val @ 4 | best val |" in report
    assert "Collapse rate" in report and "Drift" in report and "kidney_left" in report
    study = json.loads((root / "study.json").read_text())["results"]["ct_phantom"]
    sup = next(r for r in study if r["arm"] == "supervised")
    assert sup["pretrain_seed"] == 0 and [s for s, _ in sup["curve"]] == [2, 4]
    assert len(next(iter(sup["confusion"].values()))) == 8  # background + 7 organs
    readout = json.loads((root / "study.json").read_text())["readouts"]["ct_phantom"]
    assert {r["arm"] for r in readout} == {"scratch", "supervised"}
    assert all(r["drift"]["cosine_min"] == pytest.approx(1.0) for r in readout)  # the encoder never moved
    assert "ct_phantom: frozen-encoder readout" in report
    stamp = (source / "encoder.pt").stat().st_mtime_ns
    run_study(cfg, progress=False)
    assert (source / "encoder.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    shutil.copytree(root, tmp_path / "moved")  # a study folder moved elsewhere is still reused, not retrained
    run_study(
        dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, out=str(tmp_path / "moved"))), progress=False
    )
    moved = tmp_path / "moved" / "ct_phantom" / "scratch" / "ratio0.01_seed0" / "best.pt"
    assert (
        moved.stat().st_mtime_ns == (root / "ct_phantom" / "scratch" / "ratio0.01_seed0" / "best.pt").stat().st_mtime_ns
    )


def test_arm_overrides_name_known_arms_and_recipe_keys_only():
    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['bogus'\]"):
        load_config(None, ["study.arm_overrides={bogus: [finetune.lr=0.1]}"])
    for key in ("finetune.split_seed=3", "finetune.label_ratio=1.0", "model.encoder=swinunetr", "seed=2"):
        with pytest.raises(ConfigError, match="is not a fine-tuning recipe setting"):
            load_config(None, [f"study.arm_overrides={{supervised: [{key}]}}"])
    load_config(None, ["study.arm_overrides={supervised: [finetune.lr=0.001, finetune.freeze_encoder_steps=50]}"])


def test_encoder_rewarms_after_unfreezing(tiny_ct, tmp_path):
    assert encoder_multiplier(1, 2, 4, 10) == 0.0  # frozen
    assert encoder_multiplier(2, 2, 4, 10) == pytest.approx(0.25 * warmup_cosine(2, 4, 10, 0.0))
    assert encoder_multiplier(5, 2, 4, 10) == pytest.approx(warmup_cosine(5, 4, 10, 0.0))  # warm again
    assert encoder_multiplier(0, 0, 4, 10) == pytest.approx(warmup_cosine(0, 4, 10, 0.0))  # no freeze: as before
    # the first update after unfreezing moves the encoder by at most lr / warmup per weight, not by ±lr
    from gtgm.models.checkpoint import save_checkpoint
    from gtgm.models.encoders import segmenter_state_dict
    from gtgm.models.registry import create_encoder

    save_checkpoint(tmp_path / "enc.pt", segmenter_state_dict(create_encoder("resunet", channels=[4, 8, 16])))
    cfg = load_config(
        None,
        [
            f"finetune.cache={tiny_ct / 'cache'}",
            f"finetune.out={tmp_path / 'ft'}",
            f"finetune.pretrained={tmp_path / 'enc.pt'}",
            "finetune.lr=0.01",
            "finetune.warmup_steps=10",
            "finetune.freeze_encoder_steps=2",
            *TINY,
            "finetune.steps=20",
        ],
    )
    tuner = Finetuner(cfg, progress=False)
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 8, (2, 1, 16, 16, 16))}
    before = encoder_weights(tuner.model, "encoder.")
    tuner.train_step(batch), tuner.train_step(batch)
    frozen = encoder_weights(tuner.model, "encoder.")
    assert all(torch.equal(before[k], frozen[k]) for k in before)
    tuner.train_step(batch)  # step 2: the first encoder update
    moved = max(float((encoder_weights(tuner.model, "encoder.")[k] - frozen[k]).abs().max()) for k in frozen)
    assert 0 < moved <= 0.01 / 10 * 1.05  # Adam moves a weight by about its lr: here lr / warmup


def test_feature_stats_tell_collapse_from_spread():
    torch.manual_seed(0)
    spread = feature_stats(torch.randn(8, 32))
    collapsed = feature_stats(torch.ones(8, 32) + 1e-6 * torch.randn(8, 32))
    assert spread["effective_rank"] > 5 and collapsed["feature_std"] < 1e-4
    assert feature_stats(torch.eye(4))["effective_rank"] == pytest.approx(3.0, abs=1e-4)  # centred: rank 3, equal


def test_confusion_counts_and_drift_by_hand():
    ref = np.array([0, 1, 1, 2, 2, -1])
    pred = np.array([0, 1, 2, 2, 1, 1])  # the ignore label (-1) is skipped
    assert confusion_counts(pred, ref, 3) == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True))
    start = encoder_weights(net, "")
    same = encoder_drift(start, net, "")
    assert same["cosine_mean"] == pytest.approx(1.0) and same["norm_scale_mean"] == pytest.approx(1.0)
    with torch.no_grad():
        net[0].weight.neg_()
        net[1].bias.fill_(0.5)
    flipped = encoder_drift(start, net, "")
    assert flipped["cosine_min"] == pytest.approx(-1.0) and flipped["norm_shift_mean"] == pytest.approx(0.5)


def test_content_control_arms_take_their_own_captions(tmp_path):
    from gtgm.errors import GtgmError
    from gtgm.study.arms import arm_config

    base = ["pretrain.captions=full.jsonl", "pretrain.text_cache=full_text"]
    with pytest.raises(GtgmError, match=r"study.caption_sets.position=\[CAPTIONS.jsonl, TEXT_CACHE\]"):
        arm_config(load_config(None, base), "position_text", 0, tmp_path)
    line = {"key": "k", "volume": "v", "start": [0, 0, 0], "size": [4, 4, 4], "text": "t", "modality": "CT"}
    (tmp_path / "int.jsonl").write_text(json.dumps({**line, "captioner": "describe:intensity"}) + "\n")
    (tmp_path / "full.jsonl").write_text(json.dumps({**line, "captioner": "describe"}) + "\n")
    sets = f"study.caption_sets={{intensity: [{tmp_path / 'int.jsonl'}, int_text]}}"
    c = arm_config(load_config(None, [*base, sets]), "intensity_text", 1, tmp_path)
    assert (c.pretrain.captions, c.pretrain.text_cache, c.seed) == (str(tmp_path / "int.jsonl"), "int_text", 1)
    assert arm_config(load_config(None, [*base, sets]), "gtgm", 0, tmp_path).pretrain.captions == "full.jsonl"
    wrong = f"study.caption_sets={{intensity: [{tmp_path / 'full.jsonl'}, t]}}"  # full captions: refused
    with pytest.raises(GtgmError, match=r"captions by \['describe'\], but study arm 'intensity_text' needs"):
        arm_config(load_config(None, [*base, wrong]), "intensity_text", 0, tmp_path)
    with pytest.raises(ConfigError, match="not arms: oracle_text -> oracle"):  # the keys before caption sets
        load_config(None, [*base, "study.caption_sets={oracle_text: [a, b]}"])
