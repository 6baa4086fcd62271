"""Fine-tuning's optimiser and schedule options: gtgm's AdamW + cosine, or nnU-Net's SGD + poly."""

import pytest
import torch

from gtgm.cli import main
from gtgm.config import load_config
from gtgm.train.finetune import Finetuner
from gtgm.train.optim import encoder_multiplier, schedule_multiplier, warmup_cosine, warmup_poly


def test_poly_is_nnunets_decay_after_the_warm_up():
    assert [warmup_poly(s, 0, 10) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5**0.9, 0.0])
    assert warmup_poly(1, 4, 10) == pytest.approx(0.5)  # linear warm-up first, as for cosine
    assert warmup_poly(12, 0, 10) == 0.0  # never negative past the end
    assert schedule_multiplier(5, 2, 10, "poly") == pytest.approx(0.5**0.9)
    assert schedule_multiplier(5, 2, 10, "cosine") == pytest.approx(warmup_cosine(5, 2, 10, 0.0))
    assert encoder_multiplier(5, 0, 2, 10, "poly") == pytest.approx(0.5**0.9)
    assert encoder_multiplier(1, 2, 2, 10, "poly") == 0.0  # frozen


def _tuner(tiny_ct, tmp_path, *extra):
    over = [f"finetune.cache={tiny_ct / 'cache'}", f"finetune.out={tmp_path / 'ft'}", "model.channels=[4,8,16]",
            "finetune.patch_size=[16,16,16]", "finetune.steps=10", "finetune.warmup_steps=0", "finetune.lr=0.01",
            *extra]  # fmt: skip
    return Finetuner(load_config(None, over), progress=False)


def test_sgd_poly_is_nnunets_optimiser_and_schedule(tiny_ct, tmp_path):
    tuner = _tuner(tiny_ct, tmp_path, "finetune.optimizer=sgd", "finetune.schedule=poly")
    assert isinstance(tuner.opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.99 and g["nesterov"] for g in tuner.opt.param_groups)
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 8, (2, 1, 16, 16, 16))}
    for _ in range(3):
        tuner.train_step(batch)
    assert [g["lr"] for g in tuner.opt.param_groups] == pytest.approx([0.01 * 0.7**0.9] * 2)


def test_the_default_stays_adamw_with_cosine(tiny_ct, tmp_path):
    tuner = _tuner(tiny_ct, tmp_path)
    assert type(tuner.opt) is torch.optim.AdamW
    assert tuner.sched.lr_lambdas[1](5) == pytest.approx(warmup_cosine(5, 0, 10, 0.0))


def test_an_unknown_optimiser_names_the_key(capsys):
    assert main(["config", "finetune.optimizer=adam"]) == 1
    err = capsys.readouterr().err
    assert "finetune.optimizer" in err and "Traceback" not in err
