"""``gtgm query`` (zero-shot text queries over volumes) and ``gtgm audit`` (are the captions true of their boxes)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_query_parsers(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="similarity maps of text prompts over volumes (a pretraining run, no labels)")
    q.add_argument("run", type=Path, help="folder of a finished gtgm pretrain run (encoder.pt, heads.pt, config)")
    q.add_argument("text", help="the prompt, e.g. 'CT patch. It is mostly bone-like density.'")
    q.add_argument("volumes", nargs="+", help="NIfTI files, folders or datasets to search")
    q.add_argument("--out", type=Path, required=True, help="output folder")
    q.add_argument("--also", action="append", default=[], metavar="TEXT", help="another prompt (repeatable)")
    q.add_argument(
        "--negatives",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="contrast prompts: scores become the softmax over all prompts (CLIP-style zero-shot)",
    )
    q.add_argument("--stride", type=int, nargs="+", help="window step in voxels, 1 or 3 values (default half a patch)")
    q.add_argument("--top-k", type=int, default=5, help="best windows per prompt written to <case>_top.json")
    q.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    q.add_argument("--modality", default="CT", choices=["CT", "MRI", "EM"], help="modality of the volumes")
    q.add_argument("--spacing", type=float, nargs=3, help="voxel size (x y z) to resample to (default: the run's)")
    q.add_argument("--text-encoder", help="path of the run's text encoder if it moved (its identity must match)")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    a = sub.add_parser("audit", help="check each caption's statements against its re-measured box")
    a.add_argument("captions", type=Path, help="captions.jsonl (any captioner)")
    a.add_argument("cache", type=Path, help="the preprocessed cache the captions were made from")
    a.add_argument("--out", type=Path, required=True, help="output folder (audit.jsonl, summary.json, audit.md)")


def run_query(args: argparse.Namespace) -> int:
    from gtgm.errors import GtgmError
    from gtgm.infer.query import query_volumes

    if args.top_k < 1 or args.batch < 1:
        raise GtgmError("--top-k and --batch must be at least 1")
    written = query_volumes(
        args.run,
        [args.text, *args.also],
        args.volumes,
        args.out,
        negatives=args.negatives,
        stride=args.stride,
        top_k=args.top_k,
        batch=args.batch,
        device=args.device,
        modality=args.modality,
        spacing=args.spacing,
        text_encoder=args.text_encoder,
    )
    for case, files in written.items():
        maps, top = len(files["maps"]), files["top"].name
        print(f"  {case}: {maps} map(s), {files['windows']} windows, {files['figure'].name}, {top}")
    print(f"query -> {args.out}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from gtgm.text.audit import run_audit as audit

    result = audit(args.captions, args.cache, args.out)
    for name, s in result["summary"].items():
        sup = "-" if s["supported"] is None else f"{s['supported']:.1%}"
        unchecked = "-" if s["not_checkable"] is None else f"{s['not_checkable']:.1%}"
        print(
            f"  {name}: {s['captions']} captions, {s['statements']} statements, {sup} supported, "
            f"{unchecked} of sentences not checkable"
        )
    print(f"audit -> {args.out / 'audit.md'}")
    return 0
