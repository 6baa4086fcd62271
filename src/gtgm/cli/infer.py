"""``gtgm predict`` (label maps / EM neurons), ``gtgm evaluate`` (Dice + HD95, or VOI + adapted Rand) and
``gtgm query`` (zero-shot text queries over volumes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import must_exist

NAMES = ("query", "predict", "evaluate")


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "query" in names:
        _add_query(sub)
    if "predict" in names:
        pr = sub.add_parser(
            "predict", help="segment raw volumes with a fine-tuned best.pt (NIfTI label maps, or EM HDF5 neurons)"
        )
        pr.add_argument("checkpoint", type=Path, help="best.pt from gtgm finetune")
        pr.add_argument("inputs", nargs="+", type=Path, help="NIfTI / CREMI HDF5 / TIFF files, folders or datasets")
        pr.add_argument("--out", required=True, type=Path, help="output folder")
        pr.add_argument("--task", choices=["segmentation", "em"], help="check that best.pt was trained for this task")
        pr.add_argument("--threshold", type=float, help="em: agglomeration threshold (default: chosen on validation)")
        pr.add_argument("--device", default="auto")
    if "evaluate" in names:
        ev = sub.add_parser(
            "evaluate", help="score predictions against references: Dice + HD95, or (--task em) VOI + adapted Rand"
        )
        ev.add_argument("pred_dir", type=Path)
        ev.add_argument("label_dir", type=Path, help="references of the same case names (em: a dataset or HDF5 folder)")
        ev.add_argument("--out", type=Path, help="where metrics.csv/json go (default: PRED_DIR)")
        ev.add_argument("--task", choices=["segmentation", "em"], default="segmentation")
        ev.add_argument(
            "--classes",
            type=int,
            nargs="+",
            help="classes to score (default: every label > 0 in the references or the predictions)",
        )
        ev.add_argument(
            "--border-nm", type=float, default=0.0, help="em: ignore ground truth this close to a boundary (CREMI: 25)"
        )


def run(args: argparse.Namespace) -> int:
    if args.command == "query":
        must_exist({args.run: "pretraining run", **{v: "input" for v in args.volumes}})
    elif args.command == "predict":
        must_exist({args.checkpoint: "checkpoint", **{v: "input" for v in args.inputs}})
    else:
        must_exist({args.pred_dir: "prediction folder", args.label_dir: "reference folder"})
    return {"query": _query, "predict": _predict, "evaluate": _evaluate}[args.command](args)


def _add_query(sub: argparse._SubParsersAction) -> None:
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
    q.add_argument(
        "--convention",
        default="radiological",
        choices=["radiological", "neurological"],
        help="axial/coronal figures: patient's right on the image's left (radiological, default) or right",
    )


def _query(args: argparse.Namespace) -> int:
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
        convention=args.convention,
    )
    for case, files in written.items():
        maps, top = len(files["maps"]), files["top"].name
        print(f"  {case}: {maps} map(s), {files['windows']} windows, {files['figure'].name}, {top}")
    print(f"query -> {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from gtgm.infer.predict import predict_inputs

    written = predict_inputs(
        args.checkpoint, args.inputs, args.out, args.device, task=args.task, threshold=args.threshold
    )
    print(f"wrote {len(written)} predictions to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    where = f"{args.out or args.pred_dir}/metrics.csv"
    if args.task == "em":
        from gtgm.infer.evaluate import evaluate_em

        res = evaluate_em(args.pred_dir, args.label_dir, args.out, args.border_nm)
        m = res["mean"]
        print(
            f"{len(res['cases'])} cases: VOI split {m['voi_split']:.4f}, merge {m['voi_merge']:.4f}, "
            f"adapted Rand {m['arand']:.4f}, CREMI score {m['cremi']:.4f} -> {where}"
        )
        return 0
    from gtgm.infer.evaluate import evaluate_folders

    res = evaluate_folders(args.pred_dir, args.label_dir, args.out, args.classes)
    print(f"{len(res['cases'])} cases, mean Dice {res['mean_dice']:.4f} -> {where}")
    return 0
