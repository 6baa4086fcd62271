"""The ``gtgm`` command: one sub-command per stage. Thin: parse, load config, call the stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from gtgm import __version__
from gtgm.config import load_config
from gtgm.errors import GtgmError

OVERRIDES_HELP = "config overrides as key.sub=value (YAML values), e.g. preprocess.ct_window=[-200,300]"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML preset: a path or a name under configs/ (e.g. data/default)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtgm",
        description="Generative text-guided 3D vision-language pretraining for medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"gtgm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    data = sub.add_parser("data", help="example data, dataset checks, preprocessing cache")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    ex = data_sub.add_parser("examples", help="write the embedded example corpus (real MRI, synthetic CT and EM)")
    ex.add_argument("--out", required=True, type=Path, help="output folder (gets a dataset.json)")
    ex.add_argument("--n-ct", type=int, default=10, help="number of synthetic CT phantoms (default 10)")
    ex.add_argument("--n-em", type=int, default=3, help="number of synthetic EM volumes (default 3)")

    for name, helptext in (
        ("check", "read and validate every case of a dataset"),
        ("preprocess", "reorient, resample, normalise into a memory-mappable cache"),
    ):
        p = data_sub.add_parser(name, help=helptext)
        p.add_argument(
            "dataset", type=Path, help="dataset.json, dataset folder (MSD / nnU-Net / folder / CREMI / TIFF / DICOM)"
        )
        p.add_argument("--modality", choices=["CT", "MRI", "EM"], help="modality of a plain folder of volumes")
        p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="voxel size of TIFF stacks (nm)")
        if name == "preprocess":
            p.add_argument("--out", required=True, type=Path, help="cache folder")
            p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
            _add_config(p)

    demo = sub.add_parser("demo", help="run every stage on the example corpus and write a report")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    _add_config(demo)

    cfg = sub.add_parser("config", help="print the resolved configuration")
    _add_config(cfg)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except GtgmError as exc:
        print(f"gtgm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gtgm: interrupted; finished outputs are kept, re-run to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data":
        return _data(args)
    if args.command == "demo":
        from gtgm.demo import run_demo

        written = run_demo(args.out, load_config(args.config, args.overrides))
        print("\n[demo] wrote:")
        for what, path in written.items():
            print(f"  {what:<22} {path}")
        return 0
    if args.command == "config":
        print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
        return 0
    raise AssertionError(args.command)


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "examples":
        from gtgm.data.examples import write_examples

        dataset = write_examples(args.out, n_ct=args.n_ct, n_em=args.n_em)
        print(f"wrote {len(dataset['training'])} volumes and {args.out / 'dataset.json'}")
        return 0
    from gtgm.data.datasets import load_dataset

    dataset = load_dataset(args.dataset, modality=args.modality, spacing=args.spacing)
    if args.data_command == "check":
        from gtgm.data.preprocess import check_dataset

        for line in check_dataset(dataset):
            print(line)
        return 0
    from gtgm.data.preprocess import preprocess_dataset

    cfg = load_config(args.config, args.overrides)
    index = preprocess_dataset(dataset, args.out, cfg.preprocess, workers=args.workers)
    print(f"cached {len(index['cases'])} cases in {args.out} (index: {args.out / 'index.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
