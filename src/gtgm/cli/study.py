"""``gtgm study`` (arms x label ratios x seeds), ``gtgm probe`` (frozen-encoder probes) and ``gtgm demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import add_config, str_override
from gtgm.config import group_config, load_config
from gtgm.errors import GtgmError

NAMES = ("study", "probe", "demo")


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "study" in names:
        st = sub.add_parser(
            "study", help="label-efficiency study: arms (scratch, pretrained, ...) x label ratios x seeds"
        )
        st.add_argument("cache", help="preprocessed cache with labeled cases")
        st.add_argument("--pretrained", default="", help="encoder.pt from gtgm pretrain (the arm 'pretrained')")
        st.add_argument("--captions", help="captions.jsonl for the arms the study pretrains (pretrain.captions)")
        st.add_argument("--text-cache", help="text embedding cache of those captions (pretrain.text_cache)")
        st.add_argument("--out", help="study folder (study.out)")
        add_config(st)
    if "probe" in names:
        pr = sub.add_parser("probe", help="frozen-encoder probes: linear voxel read-out (Dice) and presence (AUC)")
        pr.add_argument("cache", help="preprocessed cache with labeled cases")
        pr.add_argument(
            "--encoder", nargs="+", required=True, help="encoder.pt files; 'random' = random initialisation"
        )
        pr.add_argument("--group", required=True, help="labelled cache group (e.g. ct_phantom)")
        pr.add_argument("--label-ratio", type=float, help="share of the training labels the probes may use")
        pr.add_argument("--on", choices=["test", "val"], default="test", help="score on the test or validation cases")
        pr.add_argument("--out", type=Path, required=True, help="folder for probe.json")
        add_config(pr)
    if "demo" in names:
        demo = sub.add_parser("demo", help="run every stage on the example corpus and write a report (preset demo)")
        demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
        demo.add_argument(
            "--no-real", action="store_true", help="leave out the real CT/MR from the package index (offline runs)"
        )
        demo.add_argument(
            "--real-phantoms",
            type=int,
            default=0,
            metavar="N",
            help="CT phantoms added to the real CT as partial-label training cases (default 0; with N, add "
            "finetune.synthetic_share=0.3 to give them 30 %% of the draws)",
        )
        add_config(demo)


def run(args: argparse.Namespace) -> int:
    return {"study": _study, "probe": _probe, "demo": _demo}[args.command](args)


def _study(args: argparse.Namespace) -> int:
    from gtgm.study.run import run_study

    overrides = [*args.overrides, str_override("finetune.cache", args.cache)]
    overrides += [str_override("study.out", args.out)] if args.out else []
    overrides += [
        str_override(f"pretrain.{k}", v) for k, v in (("captions", args.captions), ("text_cache", args.text_cache)) if v
    ]
    cfg = load_config(args.config or "finetune/cpu-small", overrides)
    report = run_study(cfg, args.pretrained, overrides=args.overrides)
    print(f"study report: {report}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from gtgm.fsutil import write_json
    from gtgm.study.probe import run_probe

    overrides = [str_override("finetune.cache", args.cache), *args.overrides]
    if args.label_ratio is not None:
        overrides.append(f"finetune.label_ratio={args.label_ratio}")
    cfg = group_config(load_config(args.config or "finetune/cpu-small", overrides), args.group, args.overrides)
    for enc in args.encoder:
        if enc != "random" and not Path(enc).is_file():
            raise GtgmError(f"{enc}: encoder file not found")
    results = [run_probe(cfg, "" if e == "random" else e, args.group, cfg.seed, on=args.on) for e in args.encoder]
    write_json(Path(args.out) / "probe.json", results)
    for r in results:
        v, p = r["voxel"]["mean_dice"], r["presence"]["mean_auc"]
        print(f"{r['encoder']}: voxel probe Dice {v:.3f}, presence AUC {p:.3f}")
    print(f"probes -> {Path(args.out) / 'probe.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gtgm.demo.run import run_demo

    cfg = load_config(args.config or "demo", args.overrides)
    written = run_demo(args.out, cfg, overrides=args.overrides, real=not args.no_real, real_phantoms=args.real_phantoms)
    print("\n[demo] wrote:")
    for what, path in written.items():
        print(f"  {what:<22} {path}")
    return 0
