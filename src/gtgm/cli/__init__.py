"""The ``gtgm`` command: one sub-command per stage. Thin: parse, load config, call the stage."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from pathlib import Path

import yaml

from gtgm import __version__
from gtgm.cli.export import add_export_parser, run_export
from gtgm.cli.query import add_query_parsers, run_audit, run_query
from gtgm.config import load_config
from gtgm.errors import GtgmError

OVERRIDES_HELP = "config overrides as key.sub=value (YAML values), e.g. preprocess.ct_window=[-200,300]"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML preset: a path or a name under configs/ (e.g. data/default)")
    p.epilog = f"Any number of KEY=VALUE arguments may follow: {OVERRIDES_HELP}."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtgm",
        description="Generative text-guided 3D vision-language pretraining for medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"gtgm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    data = sub.add_parser("data", help="example data, dataset checks, preprocessing cache")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    ex = data_sub.add_parser("examples", help="write the embedded example corpus (real MRI, synthetic CT and EM)")
    ex.add_argument("--out", required=True, type=Path, help="output folder (gets a dataset.json)")
    ex.add_argument("--n-ct", type=int, default=10, help="number of synthetic CT phantoms (default 10)")
    ex.add_argument("--n-em", type=int, default=3, help="number of synthetic EM volumes (default 3)")
    ex.add_argument(
        "--n-ct-unlabeled",
        type=int,
        default=0,
        help="extra unlabelled synthetic CT phantoms for pretraining (group ct_unlabeled; default 0)",
    )

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

    exp_nn = data_sub.add_parser("export-nnunet", help="write a labelled dataset / group as an nnU-Net v2 raw dataset")
    exp_nn.add_argument("dataset", type=Path, help="dataset.json or dataset folder (as for data check)")
    exp_nn.add_argument("--group", help="the group to export (needed when the dataset has several)")
    exp_nn.add_argument("--id", type=int, required=True, help="nnU-Net dataset id, 1 to 999 (e.g. 501)")
    exp_nn.add_argument("--name", default="", help="dataset name after the id (default: the group)")
    exp_nn.add_argument("--out", required=True, type=Path, help="nnUNet_raw folder")
    add_export_parser(sub)
    add_query_parsers(sub)

    cap = sub.add_parser("caption", help="generate one caption per patch location (describe / hf / openai)")
    cap.add_argument("cache", nargs="?", type=Path, help="preprocessed cache folder (not needed with --refine)")
    cap.add_argument("--out", required=True, type=Path, help="captions.jsonl to write or resume")
    cap.add_argument("--captioner", choices=["describe", "hf", "openai"], help="backend (default: describe)")
    cap.add_argument("--model", help="hf: model folder or hub id; openai: model name on the server")
    cap.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    cap.add_argument("--shard", help="i/n: caption only every n-th location, starting at i (default: torchrun rank)")
    cap.add_argument("--refine", type=Path, metavar="CAPTIONS", help="rewrite these captions in report style (openai)")
    _add_config(cap)

    emb = sub.add_parser("embed-text", help="encode every caption once with a frozen text encoder")
    emb.add_argument("captions", type=Path, help="captions.jsonl (its shard files are read too)")
    emb.add_argument("--out", required=True, type=Path, help="text cache folder")
    emb.add_argument("--text-encoder", help="minilm (default, offline), or a folder / hub id (BioBERT, ...)")
    emb.add_argument("--pooling", choices=["cls", "mean"], help="cls (paper) or mean (MiniLM default)")
    _add_config(emb)

    pre = sub.add_parser("pretrain", help="pretrain a 3D encoder (CLIP + Barlow Twins); also under torchrun")
    pre.add_argument("--cache", help="preprocessed cache folder (pretrain.cache)")
    pre.add_argument("--captions", help="captions.jsonl (pretrain.captions)")
    pre.add_argument("--text-cache", help="text embedding cache folder (pretrain.text_cache)")
    pre.add_argument("--out", help="run folder (pretrain.out)")
    pre.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    pre.add_argument("--stop-after", type=int, metavar="N", help="leave after N steps with a checkpoint (resume later)")
    _add_config(pre)

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
    _add_config(ft)

    pr = sub.add_parser(
        "predict", help="segment raw volumes with a fine-tuned best.pt (NIfTI label maps, or EM HDF5 neurons)"
    )
    pr.add_argument("checkpoint", type=Path, help="best.pt from gtgm finetune")
    pr.add_argument("inputs", nargs="+", type=Path, help="NIfTI / CREMI HDF5 / TIFF files, folders or datasets")
    pr.add_argument("--out", required=True, type=Path, help="output folder")
    pr.add_argument("--task", choices=["segmentation", "em"], help="check that best.pt was trained for this task")
    pr.add_argument("--threshold", type=float, help="em: agglomeration threshold (default: chosen on validation)")
    pr.add_argument("--device", default="auto")

    ev = sub.add_parser(
        "evaluate", help="score predictions against references: Dice + HD95, or (--task em) VOI + adapted Rand"
    )
    ev.add_argument("pred_dir", type=Path)
    ev.add_argument("label_dir", type=Path, help="references of the same case names (em: a dataset or HDF5 folder)")
    ev.add_argument("--out", type=Path, help="where metrics.csv/json go (default: PRED_DIR)")
    ev.add_argument("--task", choices=["segmentation", "em"], default="segmentation")
    ev.add_argument("--classes", type=int, nargs="+", help="classes to score (default: all labels > 0)")
    ev.add_argument(
        "--border-nm", type=float, default=0.0, help="em: ignore ground truth this close to a boundary (CREMI: 25)"
    )

    st = sub.add_parser("study", help="label-efficiency study: arms (scratch, pretrained, ...) x label ratios x seeds")
    st.add_argument("cache", help="preprocessed cache with labeled cases")
    st.add_argument("--pretrained", default="", help="encoder.pt from gtgm pretrain (the arm 'pretrained')")
    st.add_argument("--captions", help="captions.jsonl for the arms the study pretrains (pretrain.captions)")
    st.add_argument("--text-cache", help="text embedding cache of those captions (pretrain.text_cache)")
    st.add_argument("--out", help="study folder (study.out)")
    _add_config(st)

    pr = sub.add_parser("probe", help="frozen-encoder probes: linear voxel read-out (Dice) and presence (AUC)")
    pr.add_argument("cache", help="preprocessed cache with labeled cases")
    pr.add_argument("--encoder", nargs="+", required=True, help="encoder.pt files; 'random' = random initialisation")
    pr.add_argument("--group", required=True, help="labelled cache group (e.g. ct_phantom)")
    pr.add_argument("--label-ratio", type=float, help="share of the training labels the probes may use")
    pr.add_argument("--on", choices=["test", "val"], default="test", help="score on the test or validation cases")
    pr.add_argument("--out", type=Path, required=True, help="folder for probe.json")
    _add_config(pr)

    demo = sub.add_parser(
        "demo", help="run every stage on the example corpus and write a report (preset configs/demo.yaml)"
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    _add_config(demo)

    cfg = sub.add_parser("config", help="print the resolved configuration")
    _add_config(cfg)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse, collecting ``key=value`` overrides wherever they appear among the arguments."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown or (extra and not hasattr(args, "config")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _dispatch(args)
    except (GtgmError, OSError, MemoryError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"gtgm: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gtgm: interrupted; finished outputs are kept, re-run to resume", file=sys.stderr)
        return 130


def _describe(exc: BaseException) -> str:
    """One line for an error: gtgm's own message, or the path and cause of a system error."""
    if isinstance(exc, GtgmError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory (a volume or batch too large for this machine; try a coarser spacing or smaller patches)"
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    cause = {
        errno.ENOSPC: "no space left on the device",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOTDIR: "not a folder (a part of the path is a file)",
        errno.EEXIST: "already exists and is not a folder",
    }
    return f"{where}{cause.get(exc.errno, exc.strerror or str(exc))} (use --debug for the traceback)"


def _probe(args: argparse.Namespace) -> int:
    from gtgm.study.probe import run_probe

    overrides = [_str("finetune.cache", args.cache), *args.overrides]
    if args.label_ratio is not None:
        overrides.append(f"finetune.label_ratio={args.label_ratio}")
    from gtgm.config import group_config

    cfg = group_config(load_config(args.config or "finetune/cpu-small", overrides), args.group, args.overrides)
    for enc in args.encoder:
        if enc != "random" and not Path(enc).is_file():
            raise GtgmError(f"{enc}: encoder file not found")
    results = [run_probe(cfg, "" if e == "random" else e, args.group, cfg.seed, on=args.on) for e in args.encoder]
    from gtgm.fsutil import write_json

    write_json(Path(args.out) / "probe.json", results)
    for r in results:
        v, p = r["voxel"]["mean_dice"], r["presence"]["mean_auc"]
        print(f"{r['encoder']}: voxel probe Dice {v:.3f}, presence AUC {p:.3f}")
    print(f"probes -> {Path(args.out) / 'probe.json'}")
    return 0


def _str(key: str, value: object) -> str:
    """A ``key=value`` override whose value stays a string (a path such as ``007`` or ``on`` is not YAML)."""
    return f"{key}={json.dumps(str(value))}"


def _check_out(args: argparse.Namespace) -> None:
    """``--out`` can be written (a folder; a file for ``caption``) before any work starts."""
    from gtgm.fsutil import check_out

    out = getattr(args, "out", None)
    if out is not None and str(out):
        check_out(out, folder=args.command != "caption")


def _dispatch(args: argparse.Namespace) -> int:
    _check_out(args)
    if args.command == "data":
        return _data(args)
    if args.command == "caption":
        return _caption(args)
    if args.command == "embed-text":
        return _embed_text(args)
    if args.command == "pretrain":
        return _pretrain(args)
    if args.command in ("finetune", "predict", "evaluate", "study"):
        return _segmentation(args)
    if args.command == "probe":
        return _probe(args)
    if args.command == "export":
        return run_export(args)
    if args.command == "query":
        return run_query(args)
    if args.command == "audit":
        return run_audit(args)
    if args.command == "demo":
        from gtgm.demo.run import run_demo

        written = run_demo(args.out, load_config(args.config or "demo", args.overrides), overrides=args.overrides)
        print("\n[demo] wrote:")
        for what, path in written.items():
            print(f"  {what:<22} {path}")
        return 0
    if args.command == "config":
        print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
        return 0
    raise AssertionError(args.command)


def _parse_shard(text: str | None) -> tuple[int, int]:
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
            overrides.append(_str(f"caption.{key}", flag))
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
    stats = run_captioning(
        VolumeCache(args.cache), captioner, args.out, cfg.caption, cfg.seed, _parse_shard(args.shard)
    )
    print(
        f"wrote {stats['written']} captions to {stats['path']} ({stats['skipped']} already done, "
        f"{stats['per_second']:.1f} patches/s)"
    )
    return 0


def _embed_text(args: argparse.Namespace) -> int:
    from gtgm.text.encoders import embed_captions

    overrides = list(args.overrides)
    if args.text_encoder:
        overrides.append(_str("text.encoder", args.text_encoder))
    if args.pooling:
        overrides.append(f"text.pooling={args.pooling}")
    cfg = load_config(args.config, overrides)
    stats = embed_captions(args.captions, args.out, cfg.text, cfg.device)
    rate = f", {stats['per_second']:.1f} texts/s" if stats["encoded"] else " (all cached)"
    print(
        f"{stats['texts']} captions, {stats['unique']} distinct texts, {stats['encoded']} encoded{rate} -> {args.out}"
    )
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from gtgm.train.pretrain import pretrain

    overrides = list(args.overrides)
    for key in ("cache", "captions", "text_cache", "out"):
        if getattr(args, key):
            overrides.append(_str(f"pretrain.{key}", getattr(args, key)))
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


def _segmentation(args: argparse.Namespace) -> int:
    if args.command == "predict":
        from gtgm.infer.predict import predict_inputs

        written = predict_inputs(
            args.checkpoint, args.inputs, args.out, args.device, task=args.task, threshold=args.threshold
        )
        print(f"wrote {len(written)} predictions to {args.out}")
        return 0
    if args.command == "evaluate":
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
    overrides = list(args.overrides)
    if args.command == "study":
        from gtgm.study.run import run_study

        overrides += [_str("finetune.cache", args.cache)] + ([_str("study.out", args.out)] if args.out else [])
        overrides += [
            _str(f"pretrain.{k}", v) for k, v in (("captions", args.captions), ("text_cache", args.text_cache)) if v
        ]
        cfg = load_config(args.config or "finetune/cpu-small", overrides)
        report = run_study(cfg, args.pretrained, overrides=args.overrides)
        print(f"study report: {report}")
        return 0
    from gtgm.train.finetune import finetune

    for flag, key in (
        (args.cache, "cache"),
        (args.group, "group"),
        (args.pretrained, "pretrained"),
        (args.label_ratio, "label_ratio"),
        (args.out, "out"),
        (args.task, "task"),
    ):
        if flag is not None:
            overrides.append(f"finetune.{key}={flag}" if key == "label_ratio" else _str(f"finetune.{key}", flag))
    cfg = load_config(args.config, overrides)
    result = finetune(cfg, resume=args.resume)
    if not result:  # a non-zero torchrun rank
        return 0
    t, model = result["test"], Path(cfg.finetune.out) / "best.pt"
    if result["task"] == "em":
        print(
            f"test VOI split {t['voi_split']:.4f} + merge {t['voi_merge']:.4f} = {t['voi']:.4f}, adapted Rand "
            f"{t['arand']:.4f}, CREMI score {t['cremi']:.4f} at threshold {t['threshold']:g}; model: {model}"
        )
        return 0
    print(
        f"test mean Dice {t['mean_dice']:.4f} over classes {list(t['dice'])} "
        f"(best val {result['best_val']:.4f}); model: {model}"
    )
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "examples":
        from gtgm.data.examples import write_examples

        dataset = write_examples(args.out, n_ct=args.n_ct, n_em=args.n_em, n_ct_unlabeled=args.n_ct_unlabeled)
        print(f"wrote {len(dataset['training'])} volumes and {args.out / 'dataset.json'}")
        return 0
    from gtgm.data.datasets import load_dataset

    if args.data_command == "export-nnunet":
        from gtgm.export.nnunet_data import export_nnunet_raw

        folder = export_nnunet_raw(load_dataset(args.dataset), args.group, args.id, args.out, args.name)
        print(f"wrote nnU-Net raw dataset {folder} (nnUNetv2_plan_and_preprocess --verify_dataset_integrity checks it)")
        return 0
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
