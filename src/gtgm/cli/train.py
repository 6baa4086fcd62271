"""``gtgm pretrain`` and ``gtgm finetune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import add_config, must_exist, str_override
from gtgm.config import load_config

NAMES = ("pretrain", "finetune")


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "pretrain" in names:
        pre = sub.add_parser("pretrain", help="pretrain a 3D encoder (CLIP + Barlow Twins); also under torchrun")
        pre.add_argument("--cache", help="preprocessed cache folder (pretrain.cache)")
        pre.add_argument("--captions", help="captions.jsonl (pretrain.captions)")
        pre.add_argument("--text-cache", help="text embedding cache folder (pretrain.text_cache)")
        pre.add_argument("--out", help="run folder (pretrain.out)")
        pre.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
        pre.add_argument(
            "--stop-after", type=int, metavar="N", help="leave after N steps with a checkpoint (resume later)"
        )
        add_config(pre)
    if "finetune" in names:
        ft = sub.add_parser("finetune", help="fine-tune a segmenter with a share of the labels (scratch or pretrained)")
        ft.add_argument("cache", nargs="?", help="preprocessed cache with labeled cases (finetune.cache)")
        ft.add_argument("--group", help="cache group, e.g. ct_phantom (finetune.group)")
        ft.add_argument("--pretrained", help="encoder.pt from gtgm pretrain (finetune.pretrained)")
        ft.add_argument(
            "--label-ratio", type=float, help="share of training cases / labelled slices (finetune.label_ratio)"
        )
        ft.add_argument("--out", help="run folder (finetune.out)")
        ft.add_argument(
            "--task", choices=["segmentation", "em"], help="segmentation (CT/MRI classes) or em (neuron affinities)"
        )
        ft.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
        add_config(ft)


def run(args: argparse.Namespace) -> int:
    return _pretrain(args) if args.command == "pretrain" else _finetune(args)


def _pretrain(args: argparse.Namespace) -> int:
    from gtgm.train.pretrain import pretrain

    overrides = list(args.overrides)
    for key in ("cache", "captions", "text_cache", "out"):
        if getattr(args, key):
            overrides.append(str_override(f"pretrain.{key}", getattr(args, key)))
    result = pretrain(load_config(args.config, overrides), resume=args.resume, stop_after=args.stop_after)
    if not result["finished"]:
        print(f"stopped at step {result['step']}; continue with --resume")
        return 0
    if result["retrieval"]:
        r = result["retrieval"]
        print(
            f"held-out image->text retrieval: top-1 {r['top1']:.1%} (chance {r['chance_top1']:.1%}), "
            f"top-5 {r['top5']:.1%} (chance {r['chance_top5']:.1%}) on {r['n']} patches; from modality and "
            f"position alone: {r.get('position_top1', float('nan')):.1%} / {r.get('position_top5', float('nan')):.1%}"
        )
    print(f"pretrained {result['step']} steps; encoder weights: {Path(result['out']) / 'encoder.pt'}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for flag, key in (
        (args.cache, "cache"),
        (args.group, "group"),
        (args.pretrained, "pretrained"),
        (args.label_ratio, "label_ratio"),
        (args.out, "out"),
        (args.task, "task"),
    ):
        if flag is not None:
            overrides.append(
                f"finetune.{key}={flag}" if key == "label_ratio" else str_override(f"finetune.{key}", flag)
            )
    cfg = load_config(args.config, overrides)
    must_exist({cfg.finetune.cache: "cache folder", cfg.finetune.pretrained: "pretrained encoder"})
    from gtgm.train.finetune import finetune

    result = finetune(cfg, resume=args.resume)
    if not result:  # a non-zero torchrun rank
        return 0
    t, model = result["test"], Path(cfg.finetune.out) / "best.pt"
    val = "no validation cases" if result["best_val"] is None else f"best val {result['best_val']:.4f}"
    if t is None:
        print(f"no test cases named: nothing scored on a test volume ({val}); model: {model}")
        return 0
    if result["task"] == "em":
        print(
            f"test VOI split {t['voi_split']:.4f} + merge {t['voi_merge']:.4f} = {t['voi']:.4f}, adapted Rand "
            f"{t['arand']:.4f}, CREMI score {t['cremi']:.4f} at threshold {t['threshold']:g}; model: {model}"
        )
        return 0
    print(f"test mean Dice {t['mean_dice']:.4f} over classes {list(t['dice'])} ({val}); model: {model}")
    return 0
