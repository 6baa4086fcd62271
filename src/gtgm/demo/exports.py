"""The demo's exports: the main CT model as a MONAI bundle, the CT phantoms as nnU-Net raw dataset 501, and a
small ``resenc`` encoder, pretrained on the network nnU-Net itself plans for that dataset, exported for
``nnUNetv2_train -pretrained_weights``.

The plan is nnU-Net's own (``extract_fingerprints`` + ``nnUNetPlannerResEncM``, through
:mod:`gtgm.export.nnunet_run`, its folders in the demo's output folder), with a CPU-sized GPU-memory target of
:data:`CPU_MEMORY_TARGET_GB`: on the 128x128x64 phantoms the default 8 GB target plans a 6-stage network of ~60 M
parameters (features 32..320), too heavy for a 2-core demo; 0.05 GB gives 3 stages (32, 64, 128), the same planner
and blocks (1, 3, 4). The plans file is named :data:`PLANS_NAME` so nnU-Net's default plans stay free.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gtgm.config import Config, with_overrides
from gtgm.data.datasets import load_dataset
from gtgm.demo.pretraining import pretrain_run

DATASET_ID = 501
PLANS_NAME = "nnUNetResEncUNetCPUPlans"
CPU_MEMORY_TARGET_GB = 0.05
PLANS_KEY = "nnU-Net plans (ResEnc-M planner)"
RESENC_STEPS, RESENC_BATCH = 20, 2  # "a small resenc run": enough to show the route, not to learn much


def demo_exports(out: Path, cfg: Config, examples: Path, main_ct_run: Path, progress: bool) -> dict[str, Path]:
    """Write the three exports under ``out/exports``; returns what was written where (reruns reuse each
    finished piece)."""
    from gtgm.export.bundle import export_bundle
    from gtgm.export.nnunet_data import export_nnunet_raw

    exports = out / "exports"
    bundle = exports / "ct_bundle"
    export_bundle(main_ct_run / "best.pt", bundle)
    raw = exports / "nnUNet_raw"
    dataset = next(raw.glob(f"Dataset{DATASET_ID}_*"), None) if raw.is_dir() else None
    if dataset is None:  # a rerun keeps the one written before (nnU-Net ids are unique)
        dataset = export_nnunet_raw(load_dataset(examples), "ct_phantom", DATASET_ID, raw)
    written = {"MONAI bundle (CT)": bundle / "configs" / "inference.json"}
    written["nnU-Net raw dataset"] = dataset / "dataset.json"
    if importlib.util.find_spec("nnunetv2") is None:
        print("[demo] nnunetv2 is not installed (pip install 'gtgm[nnunet]'): no resenc encoder for nnU-Net")
        return written
    plans = plan_with_nnunet(exports, dataset.name)
    run = _pretrain_resenc(out, cfg, plans, progress)
    from gtgm.export.nnunet import export_nnunet

    files = export_nnunet(run / "encoder.pt", plans, "3d_fullres", exports / "nnunet_resenc")
    return {
        **written,
        PLANS_KEY: plans,
        "resenc pretraining": run / "encoder.pt",
        "nnU-Net pretrained weights": files["pretrained_weights"],
    }


def plan_with_nnunet(exports: Path, dataset: str) -> Path:
    """nnU-Net's fingerprint and ResEnc-M planner (CPU memory target) on ``exports/nnUNet_raw/<dataset>``;
    returns the plans file (kept from an earlier run if there)."""
    from gtgm.export.nnunet_run import NnUNetWork, plan

    plans = exports / "nnUNet_preprocessed" / dataset / f"{PLANS_NAME}.json"
    if plans.is_file():
        return plans
    print(f"[demo] nnU-Net fingerprint + ResEnc-M plan of {dataset} (memory target {CPU_MEMORY_TARGET_GB} GB)")
    return plan(NnUNetWork(exports, DATASET_ID), PLANS_NAME, memory_gb=CPU_MEMORY_TARGET_GB)


def _pretrain_resenc(out: Path, cfg: Config, plans: Path, progress: bool) -> Path:
    """A short pretraining of the resenc encoder the plans describe, on the demo's cache and captions."""
    from gtgm.export.nnunet import resenc_overrides

    steps = min(cfg.pretrain.steps, RESENC_STEPS)
    small = [f"pretrain.steps={steps}", f"pretrain.eval_every={steps}", f"pretrain.batch_size={RESENC_BATCH}"]
    print(f"[demo] resenc pretraining as planned by nnU-Net ({steps} steps, batch {RESENC_BATCH})")
    rcfg = with_overrides(cfg, [*resenc_overrides(plans), *small])
    return pretrain_run(out, rcfg, progress, out / "exports" / "resenc_pretrain")


def export_blocks(out: Path, exports: dict[str, Path]) -> list:
    """The report's "Exports" section: links and the commands that use them."""
    if not exports:
        return []
    bundle, dataset = exports["MONAI bundle (CT)"].parent.parent, exports["nnU-Net raw dataset"].parent
    text = (
        f"MONAI bundle of the main CT model: [{bundle.relative_to(out)}]({bundle.relative_to(out)}) "
        "(`python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json "
        "--bundle_root . --dataset_dir DIR --output_dir OUT`; its label maps are those of `gtgm predict`). "
        f"The CT phantoms as an nnU-Net v2 raw dataset: [{dataset.relative_to(out)}]({dataset.relative_to(out)}) "
        "(`nnUNetv2_plan_and_preprocess -d 501 --verify_dataset_integrity`)."
    )
    blocks: list = [("heading", "Exports"), ("text", text)]
    if "nnU-Net pretrained weights" not in exports:
        return blocks + [("text", "No resenc encoder for nnU-Net: nnunetv2 is not installed (`gtgm[nnunet]`).")]
    plans, run, weights = (exports[k] for k in (PLANS_KEY, "resenc pretraining", "nnU-Net pretrained weights"))
    link = {k: f"[{p.relative_to(out)}]({p.relative_to(out)})" for k, p in (("plans", plans), ("run", run.parent))}
    link["weights"] = f"[{weights.parent.relative_to(out)}]({weights.parent.relative_to(out)})"
    text = (
        "A resenc encoder for nnU-Net: nnU-Net's own fingerprint and ResEnc-M planner on that dataset, with a "
        f"CPU-sized GPU-memory target of {CPU_MEMORY_TARGET_GB} GB, planned {link['plans']} ({_plans_summary(plans)}; "
        "the default 8 GB target plans 6 stages, 32 to 320 features). gtgm pretrained that encoder briefly "
        f"({link['run']}, {_steps(run)} steps: a demonstration of the route, not a useful encoder) and exported it "
        f"for nnU-Net: {link['weights']}. Train nnU-Net from it, with `nnUNet_raw`, `nnUNet_preprocessed` and "
        "`nnUNet_results` set to the folders of those names under `exports/`: "
        f"`nnUNetv2_preprocess -d {DATASET_ID} -plans_name {PLANS_NAME} -c 3d_fullres`, then "
        f"`nnUNetv2_train {DATASET_ID} 3d_fullres 0 -p {PLANS_NAME} -pretrained_weights {weights.resolve()}`."
    )
    blocks.append(("text", text))
    return blocks


def _plans_summary(plans: Path) -> str:
    from gtgm.fsutil import read_json

    conf = read_json(plans)["configurations"]["3d_fullres"]
    kw = conf["architecture"]["arch_kwargs"]
    return (
        f"{kw['n_stages']} stages, features {list(kw['features_per_stage'])}, blocks "
        f"{list(kw['n_blocks_per_stage'])}, patch {list(conf['patch_size'])} at spacing "
        f"{[round(s, 2) for s in conf['spacing']]} mm (nnU-Net's z, y, x)"
    )


def _steps(encoder_pt: Path) -> int:
    from gtgm.fsutil import read_json

    return int(read_json(encoder_pt.parent / "encoder.json").get("steps", RESENC_STEPS))
