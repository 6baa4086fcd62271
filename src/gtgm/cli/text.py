"""``gtgm caption``, ``gtgm embed-text`` and ``gtgm audit``: text for every patch location, its frozen
embeddings, and a check of each caption's statements against its re-measured box."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import add_config, str_override
from gtgm.config import load_config
from gtgm.errors import GtgmError

NAMES = ("audit", "caption", "embed-text")


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "audit" in names:
        a = sub.add_parser("audit", help="check each caption's statements against its re-measured box")
        a.add_argument("captions", type=Path, help="captions.jsonl (any captioner)")
        a.add_argument("cache", type=Path, help="the preprocessed cache the captions were made from")
        a.add_argument("--out", type=Path, required=True, help="output folder (audit.jsonl, summary.json, audit.md)")
    if "caption" in names:
        cap = sub.add_parser("caption", help="generate one caption per patch location (describe / hf / openai)")
        cap.add_argument("cache", nargs="?", type=Path, help="preprocessed cache folder (not needed with --refine)")
        cap.add_argument("--out", required=True, type=Path, help="captions.jsonl to write or resume")
        cap.add_argument("--captioner", choices=["describe", "hf", "openai"], help="backend (default: describe)")
        cap.add_argument("--model", help="hf: model folder or hub id; openai: model name on the server")
        cap.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
        cap.add_argument(
            "--shard", help="i/n: caption only every n-th location, starting at i (default: torchrun rank)"
        )
        cap.add_argument(
            "--refine", type=Path, metavar="CAPTIONS", help="rewrite these captions in report style (openai)"
        )
        add_config(cap)
    if "embed-text" in names:
        emb = sub.add_parser("embed-text", help="encode every caption once with a frozen text encoder")
        emb.add_argument("captions", type=Path, help="captions.jsonl (its shard files are read too)")
        emb.add_argument("--out", required=True, type=Path, help="text cache folder")
        emb.add_argument("--text-encoder", help="minilm (default, offline), or a folder / hub id (BioBERT, ...)")
        emb.add_argument("--pooling", choices=["cls", "mean"], help="cls (paper) or mean (MiniLM default)")
        add_config(emb)


def run(args: argparse.Namespace) -> int:
    return {"audit": _audit, "caption": _caption, "embed-text": _embed_text}[args.command](args)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/n`` -> ``(i, n)``; none given -> the torchrun rank and world size."""
    from gtgm.runtime import dist_env

    if text is None:
        return dist_env()
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise GtgmError(f"--shard '{text}' is not of the form i/n") from None
    if not 0 <= i < n:
        raise GtgmError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def _caption(args: argparse.Namespace) -> int:
    from gtgm.text.captions import run_captioning, run_refine

    overrides = list(args.overrides)
    for flag, key in ((args.captioner, "captioner"), (args.model, "model"), (args.base_url, "base_url")):
        if flag:
            overrides.append(str_override(f"caption.{key}", flag))
    cfg = load_config(args.config, overrides)
    if args.refine:
        from gtgm.text.captioners.openai import OpenAIRefiner

        stats = run_refine(args.refine, args.out, OpenAIRefiner(cfg.caption), cfg.caption.batch_size)
        print(f"refined {stats['written']} captions into {stats['path']} ({stats['skipped']} already done)")
        return 0
    if args.cache is None:
        raise GtgmError("gtgm caption needs a preprocessed cache folder (or --refine CAPTIONS)")
    from gtgm.data.patches import VolumeCache
    from gtgm.text.captioners import create_captioner

    captioner = create_captioner(cfg.caption, cfg.device)
    stats = run_captioning(VolumeCache(args.cache), captioner, args.out, cfg.caption, cfg.seed, parse_shard(args.shard))
    print(
        f"wrote {stats['written']} captions to {stats['path']} ({stats['skipped']} already done, "
        f"{stats['per_second']:.1f} patches/s)"
    )
    return 0


def _embed_text(args: argparse.Namespace) -> int:
    from gtgm.text.encoders import embed_captions

    overrides = list(args.overrides)
    if args.text_encoder:
        overrides.append(str_override("text.encoder", args.text_encoder))
    if args.pooling:
        overrides.append(f"text.pooling={args.pooling}")
    cfg = load_config(args.config, overrides)
    stats = embed_captions(args.captions, args.out, cfg.text, cfg.device)
    rate = f", {stats['per_second']:.1f} texts/s" if stats["encoded"] else " (all cached)"
    print(
        f"{stats['texts']} captions, {stats['unique']} distinct texts, {stats['encoded']} encoded{rate} -> {args.out}"
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    from gtgm.text.audit import run_audit

    result = run_audit(args.captions, args.cache, args.out)
    for name, s in result["summary"].items():
        sup = "-" if s["supported"] is None else f"{s['supported']:.1%}"
        unchecked = "-" if s["not_checkable"] is None else f"{s['not_checkable']:.1%}"
        print(
            f"  {name}: {s['captions']} captions, {s['statements']} statements, {sup} supported, "
            f"{unchecked} of sentences not checkable"
        )
    print(f"audit -> {args.out / 'audit.md'}")
    return 0
