"""``gtgm export``: pretrained weights for nnU-Net v2 (``nnunet``), fine-tuned models as MONAI bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import must_exist

NAMES = ("export",)


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "export" not in names:
        return
    exp = sub.add_parser("export", help="encoders for nnU-Net v2, fine-tuned models as MONAI bundles")
    exp_sub = exp.add_subparsers(dest="export_command", required=True, metavar="TARGET")
    nn = exp_sub.add_parser("nnunet", help="a resenc encoder.pt as nnU-Net v2 pretrained weights (both routes)")
    nn.add_argument("encoder", type=Path, help="encoder.pt of a resenc pretraining run (encoder.json beside it)")
    nn.add_argument("--plans", type=Path, required=True, help="nnU-Net plans file, e.g. nnUNetResEncUNetMPlans.json")
    nn.add_argument("--configuration", default="3d_fullres", help="plans configuration (default 3d_fullres)")
    nn.add_argument("--out", type=Path, required=True, help="output folder")
    nn.add_argument(
        "--reference",
        type=Path,
        help="an image of the dataset, for its orientation (default: the plans' gt_segmentations or nnUNet_raw)",
    )
    bd = exp_sub.add_parser("bundle", help="a fine-tuned best.pt as a MONAI bundle (configs, model.pt, docs)")
    bd.add_argument("checkpoint", type=Path, help="best.pt from gtgm finetune (segmentation)")
    bd.add_argument("--out", type=Path, required=True, help="bundle folder")
    rc = exp_sub.add_parser("resenc-config", help="print config overrides: a resenc encoder as in a plans file")
    rc.add_argument("--plans", type=Path, required=True, help="nnU-Net plans file")
    rc.add_argument("--configuration", default="3d_fullres", help="plans configuration (default 3d_fullres)")
    rc.add_argument("--reference", type=Path, help="an image of the dataset, for its orientation")


def run(args: argparse.Namespace) -> int:
    if args.export_command == "bundle":
        must_exist({args.checkpoint: "checkpoint"})
    else:
        must_exist({getattr(args, "encoder", None): "encoder", args.plans: "plans file", args.reference: "reference"})
    from gtgm.export.nnunet import export_nnunet, resenc_overrides

    if args.export_command == "bundle":
        from gtgm.export.bundle import export_bundle

        files = export_bundle(args.checkpoint, args.out)
        print(f"MONAI bundle -> {args.out} ({', '.join(str(p.relative_to(args.out)) for p in files.values())})")
        return 0
    if args.export_command == "resenc-config":
        print(" ".join(resenc_overrides(args.plans, args.configuration, args.reference)))
        return 0

    written = export_nnunet(args.encoder, args.plans, args.configuration, args.out, args.reference)
    for what, path in written.items():
        print(f"  {what:<20} {path}")
    print(f"nnU-Net: see {written['readme']} for the nnUNetv2_train command")
    return 0
