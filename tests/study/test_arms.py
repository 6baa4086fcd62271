"""Study arms that pretrain their own encoder: gtgm, image-only SSL, text-only, shuffled-text control."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from gtgm.config import load_config
from gtgm.errors import GtgmError
from gtgm.models.checkpoint import save_checkpoint
from gtgm.models.encoders import segmenter_state_dict
from gtgm.models.registry import create_encoder
from gtgm.study.run import run_study
from gtgm.train.finetune import Finetuner
from tests.conftest import private_cache

TINY = [
    "model.channels=[4,8,16]",
    "model.embed_dim=16",
    "model.head_hidden=32",
    "pretrain.patch_size=[16,16,16]",
    "pretrain.batch_size=4",
    "pretrain.steps=2",
    "pretrain.warmup_steps=1",
    "pretrain.num_workers=0",
    "pretrain.eval_every=1000",
    "pretrain.tensorboard=false",
    "finetune.steps=2",
    "finetune.val_every=2",
    "finetune.batch_size=2",
    "finetune.patch_size=[16,16,16]",
]


def test_study_pretrains_each_arm_and_compares_them(corpus, tmp_path):
    cfg = load_config(
        "study/cpu-ablation",
        [
            f"finetune.cache={private_cache(corpus, tmp_path)}",
            f"pretrain.captions={corpus / 'captions.jsonl'}",
            f"pretrain.text_cache={corpus / 'text'}",
            f"study.out={tmp_path / 'study'}",
            "study.arms=[scratch, gtgm, image_only, shuffled_text]",
            "study.recipes={scratch: {lr_a: [finetune.lr=0.01], lr_b: [finetune.lr=0.003]}}",  # both run, one kept
            "study.seeds=[0]",
            "study.groups=[ct_phantom]",
            "finetune.test_fraction=0.2",  # two test cases: the probes (study.probe) stay quick
            *TINY,
        ],
    )
    report = run_study(cfg, progress=False).read_text()
    root = tmp_path / "study"
    losses = {
        a: yaml.safe_load((root / "pretrain" / f"{a}_seed0" / "config.yaml").read_text())["loss"]
        for a in ("gtgm", "image_only", "shuffled_text")
    }
    assert losses["image_only"]["text_weight"] == 0 and losses["gtgm"]["text_weight"] > 0
    control = yaml.safe_load((root / "pretrain" / "shuffled_text_seed0" / "config.yaml").read_text())
    assert control["pretrain"]["text_control"] == "shuffled"
    ft = yaml.safe_load((root / "ct_phantom" / "gtgm" / "ratio0.01_seed0" / "config.yaml").read_text())
    assert ft["finetune"]["pretrained"] == str(root / "pretrain" / "gtgm_seed0" / "encoder.pt")
    for comparison in ("gtgm − scratch", "gtgm − image_only", "gtgm − shuffled_text", "image_only − scratch"):
        assert comparison in report
    assert "voxel probe: Dice" in report  # the preset's study.probe
    study = json.loads((root / "study.json").read_text())
    assert {r["arm"] for r in study["results"]["ct_phantom"]} == {"scratch", "gtgm", "image_only", "shuffled_text"}
    every = [(r["arm"], r["recipe"]) for r in study["all_results"]["ct_phantom"]]
    assert ("scratch", "lr_a") in every and ("scratch", "lr_b") in every
    assert all("score" not in r and "cases" not in r for r in study["all_results"]["ct_phantom"])  # no test figure
    chosen = study["recipe_choice"]["ct_phantom"]["scratch"]
    assert [r["recipe"] for r in study["results"]["ct_phantom"] if r["arm"] == "scratch"] == [chosen["chosen"]]
    assert chosen["chosen"] == max(chosen["val"], key=chosen["val"].get)  # on validation
    for name in ("lr_a", "lr_b"):
        ft = yaml.safe_load((root / "ct_phantom" / "scratch" / name / "ratio0.01_seed0" / "config.yaml").read_text())
        assert ft["finetune"]["lr"] == {"lr_a": 0.01, "lr_b": 0.003}[name]
    assert "Recipes chosen on validation" in report and "paired seeds for +0.05" in report
    assert study["test_reads"]["ct_phantom"]["reads"] >= 1 and "Test-set reads:" in report
    assert study["machine"]["cpus"] >= 1
    with pytest.raises(GtgmError, match="needs an encoder"):
        run_study(load_config(None, [f"study.out={tmp_path / 's2'}", "study.arms=[pretrained]"]), progress=False)
    with pytest.raises(GtgmError, match="needs pretrain.captions"):  # refused before the first run, not hours later
        run_study(load_config(None, [f"study.out={tmp_path / 's3'}", "study.arms=[scratch, gtgm]"]), progress=False)
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()


def test_encoder_lr_scale_applies_to_pretrained_encoders_only(tiny_ct, tmp_path):
    enc = create_encoder("resunet", channels=[4, 8, 16])
    save_checkpoint(tmp_path / "encoder.pt", segmenter_state_dict(enc))
    common = [
        f"finetune.cache={tiny_ct / 'cache'}",
        "finetune.lr=0.01",
        "finetune.encoder_lr_scale=0.1",
        *TINY,
    ]
    scratch = Finetuner(load_config(None, [*common, f"finetune.out={tmp_path / 'a'}"]), progress=False)
    pretrained = Finetuner(
        load_config(
            None, [*common, f"finetune.out={tmp_path / 'b'}", f"finetune.pretrained={tmp_path / 'encoder.pt'}"]
        ),
        progress=False,
    )
    assert [g["initial_lr"] for g in scratch.opt.param_groups] == [0.01, 0.01]
    assert [g["initial_lr"] for g in pretrained.opt.param_groups] == pytest.approx([0.001, 0.01])


def test_gtgm_vicreg_arm_differs_from_gtgm_in_its_image_image_term_only(tmp_path):
    from gtgm.study.arms import COMPARISONS, arm_config
    from gtgm.train.losses import GTGMLoss, vicreg_loss

    cfg = load_config(
        "study/cpu-label-limited",
        ["pretrain.captions=c.jsonl", "pretrain.text_cache=t", "finetune.cache=cache", f"study.out={tmp_path}"],
    )
    configs = {arm: arm_config(cfg, arm, 1, tmp_path) for arm in ("gtgm_vicreg", "gtgm")}
    vic, gtgm = (configs[arm].to_dict() for arm in ("gtgm_vicreg", "gtgm"))
    assert (vic["loss"]["image_image"], vic["loss"]["image_weight"]) == ("vicreg", 0.008)
    assert gtgm["loss"]["image_image"] == "barlow"
    assert vic["pretrain"].pop("out").endswith("gtgm_vicreg_seed1") and gtgm["pretrain"].pop("out")
    assert {**vic, "loss": None} == {**gtgm, "loss": None}
    assert ("gtgm_vicreg", "scratch") in COMPARISONS and ("gtgm_vicreg", "gtgm") in COMPARISONS
    z1, z2, text = torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)
    terms = GTGMLoss(configs["gtgm_vicreg"].loss, text_views=1)(z1, z2, text)
    assert terms["views_loss"].item() == pytest.approx(0.008 * vicreg_loss(z1, z2).item(), rel=1e-6)


def test_region_arms_differ_in_their_target_only_and_see_as_many_voxels_as_gtgm(tmp_path):
    from gtgm.study.arms import COMPARISONS, arm_config

    cfg = load_config(
        "study/cpu-label-limited",
        ["pretrain.captions=c.jsonl", "pretrain.text_cache=t", "finetune.cache=cache", f"study.out={tmp_path}"],
    )
    text, facts, gtgm = (arm_config(cfg, arm, 0, tmp_path).to_dict() for arm in ("region_text", "region_facts", "gtgm"))
    assert (text["pretrain"]["objective"], facts["pretrain"]["objective"]) == ("region", "region_facts")
    for c in (text, facts):
        c["pretrain"].pop("objective"), c["pretrain"].pop("out")
    assert text == facts
    crop, box = cfg.finetune.patch_size, gtgm["pretrain"]["patch_size"]
    voxels = lambda c, side: c["pretrain"]["batch_size"] * math.prod(side)  # noqa: E731
    assert voxels(text, crop) == 2 * voxels(gtgm, box)  # one view of 4 crops = two views of 8 boxes
    assert ("region_text", "region_facts") in COMPARISONS and ("region_text", "scratch") in COMPARISONS


def test_text_premise_arms_differ_in_their_objective_or_their_caption_set_only(tmp_path):
    from gtgm.study.arms import COMPARISONS, PRETRAIN_ARMS, arm_config

    line = {"key": "k", "volume": "v", "start": [0, 0, 0], "size": [4, 4, 4], "text": "t", "modality": "CT"}
    (tmp_path / "oracle.jsonl").write_text(json.dumps({**line, "captioner": "describe:oracle"}) + "\n")
    cfg = load_config(
        "study/cpu-label-limited",
        [
            "pretrain.captions=c.jsonl",
            "pretrain.text_cache=t",
            "finetune.cache=cache",
            f"study.out={tmp_path}",
            f"study.caption_sets={{oracle: [{tmp_path / 'oracle.jsonl'}, oracle_text]}}",
        ],
    )
    text, oracle, dense = (
        arm_config(cfg, a, 0, tmp_path).to_dict() for a in ("region_text", "region_oracle", "mae_dense")
    )
    for c in (text, oracle, dense):
        c["pretrain"].pop("out")
    assert (oracle["pretrain"].pop("captions"), oracle["pretrain"].pop("text_cache")) == (
        str(tmp_path / "oracle.jsonl"),
        "oracle_text",
    )
    assert {**text, "pretrain": {**text["pretrain"], "captions": None, "text_cache": None}} == {
        **oracle,
        "pretrain": {**oracle["pretrain"], "captions": None, "text_cache": None},
    }  # region_oracle: the caption set alone differs
    assert (text["pretrain"].pop("objective"), dense["pretrain"].pop("objective")) == ("region", "mim_dense")
    assert text == dense  # mae_dense: the objective alone differs (same crops, batch, steps, views)
    assert {a.captions for a in PRETRAIN_ARMS.values()} == {"describe", "oracle", "position", "intensity"}
    for pair in (("region_oracle", "scratch"), ("region_text", "mae_dense"), ("region_oracle", "region_text")):
        assert pair in COMPARISONS
