"""A study's run folder binds to the encoder it was trained from, and only once something was trained."""

import pytest

from gtgm.errors import GtgmError
from gtgm.study.run import _check_encoder


def test_a_failed_run_binds_to_no_encoder_and_a_trained_one_does(tmp_path):
    out = tmp_path / "ct_phantom" / "gtgm" / "ratio1_seed0"
    bad, good = tmp_path / "bad.pt", tmp_path / "good.pt"
    bad.write_bytes(b"an encoder that did not fit")
    good.write_bytes(b"the fixed encoder")
    _check_encoder(out, str(bad))  # recorded, then the run failed before its first checkpoint
    (out / "config.yaml").write_text("seed: 0\n")
    _check_encoder(out, str(good))  # the fixed rerun is not refused: nothing was fine-tuned
    assert (out / "pretrained.sha256").read_text().strip() != ""
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.pt").write_bytes(b"trained")
    with pytest.raises(GtgmError, match="fine-tuned from another"):
        _check_encoder(out, str(bad))
    with pytest.raises(GtgmError, match="not from scratch"):
        _check_encoder(out, "")
    _check_encoder(out, str(good))  # the same encoder: reused


def test_runs_made_before_a_setting_existed_keep_their_old_behaviour(tmp_path):
    import yaml

    from gtgm.config import load_config
    from gtgm.study.reuse import check_reuse

    cfg = load_config("finetune/cpu-small")
    old = cfg.to_dict()
    del old["finetune"]["postprocess"]  # a run folder written before post-processing existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(GtgmError, match="finetune.postprocess"):  # it was not post-processed: not the same run
        check_reuse(tmp_path, cfg, ("finetune",))
    check_reuse(tmp_path, load_config("finetune/cpu-small", ["finetune.postprocess=false"]), ("finetune",))
    newer = cfg.to_dict()
    del newer["finetune"]["synthetic_share"]  # a run folder written before the key: it drew no synthetic share
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(newer))
    check_reuse(tmp_path, cfg, ("finetune",))
