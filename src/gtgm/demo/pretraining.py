"""The demo's text and pretraining stages: captions (describe) and their embeddings, the pretraining run on the
demo's cache, and their report sections (caption samples, loss and retrieval curves, two-view patches)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config, with_overrides
from gtgm.data.patches import TwoViewPatchDataset, VolumeCache


def caption_stage(out: Path, cfg: Config, timings: dict[str, float], progress: bool) -> dict[str, Any]:
    from gtgm.text.captioners import create_captioner
    from gtgm.text.captions import caption_stats, read_captions, run_captioning
    from gtgm.text.encoders import embed_captions

    cache = VolumeCache(out / "cache")
    t0 = time.perf_counter()
    cap = run_captioning(
        cache,
        create_captioner(cfg.caption, cfg.device),
        out / "captions.jsonl",
        cfg.caption,
        cfg.seed,
        progress=progress,
    )
    timings["captions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = embed_captions(out / "captions.jsonl", out / "text", cfg.text, cfg.device, progress=progress)
    timings["text embeddings"] = time.perf_counter() - t0
    records = read_captions(out / "captions.jsonl")
    return {"run": cap, "embed": emb, "records": records, "stats": caption_stats(records)}


def demo_config(cfg: Config, out: Path, study: bool = False) -> Config:
    """A copy of ``cfg`` whose pretraining reads the demo's cache, captions and text cache under ``out`` and writes
    ``out/pretrain``; with ``study``, fine-tuning also reads ``out/cache`` and the study writes ``out/study``."""
    files = {"pretrain.cache": out / "cache", "pretrain.captions": out / "captions.jsonl"}
    files.update({"pretrain.text_cache": out / "text", "pretrain.out": out / "pretrain"})
    if study:
        files.update({"finetune.cache": out / "cache", "study.out": out / "study"})
    return with_overrides(cfg, values={k: str(v) for k, v in files.items()})


def pretrain_run(out: Path, cfg: Config, progress: bool, run: Path | None = None) -> Path:
    """Pretrain on the demo's cache, captions and text cache into ``run`` (default ``out/pretrain``), unless a
    finished run is there (an interrupted one is resumed). ``cfg`` is not changed."""
    from gtgm.train.pretrain import pretrain

    run = run or out / "pretrain"
    cfg = with_overrides(demo_config(cfg, out), values={"pretrain.out": str(run)})
    if (run / "encoder.pt").is_file():
        print(f"[demo] {run} already holds a finished pretraining run; reusing it")
        return run
    pretrain(cfg, resume=(run / "checkpoints" / "last.pt").is_file(), progress=progress)
    return run


def pretrain_blocks(run: Path, cfg: Config, figure: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtgm.train.logs import read_log

    log = read_log(run)
    steps = [r for r in log if "loss" in r]
    evals = [r for r in log if "retrieval/top1" in r]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for key in [k for k in steps[0] if k.endswith("_loss") or k == "loss"] if steps else []:
        ax[0].plot([r["step"] for r in steps], [r[key] for r in steps], label=key)
    ax[0].set_xlabel("step"), ax[0].set_title("pretraining loss"), ax[0].legend(fontsize=7)
    for key, style in (("top1", "-o"), ("top5", "-s")):
        ax[1].plot([r["step"] for r in evals], [r[f"retrieval/{key}"] for r in evals], style, label=key)
        if evals:
            ax[1].axhline(evals[-1][f"retrieval/chance_{key}"], ls="--", lw=0.8, color="grey")
    ax[1].set_xlabel("step"), ax[1].set_title("held-out image->text retrieval (dashed: chance)"), ax[1].legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    m, p, nan = cfg.model, cfg.pretrain, float("nan")
    rows = [
        [
            r["step"],
            f"{r['retrieval/top1']:.1%}",
            f"{r['retrieval/chance_top1']:.1%}",
            f"{r['retrieval/top5']:.1%}",
            f"{r['retrieval/chance_top5']:.1%}",
            f"{r.get('retrieval/position_top1', nan):.1%} / {r.get('retrieval/position_top5', nan):.1%}",
            int(r["retrieval/n"]),
        ]
        for r in evals
    ]
    rate = steps[-1].get("samples_per_s", float("nan")) if steps else float("nan")
    return [
        ("heading", "Pretraining"),
        (
            "text",
            f"Encoder {m.encoder} (channels {m.channels}), patches {p.patch_size}, batch {p.batch_size}, "
            f"{p.steps} steps, lr {p.lr}; loss = CLIP(v1, t) + CLIP(v2, t) + {cfg.loss.image_weight}·"
            f"{cfg.loss.image_image}(v1, v2); {rate:.1f} samples/s.",
        ),
        ("figure", (figure, "Loss terms and held-out retrieval during pretraining")),
        (
            "table",
            (
                [
                    "step",
                    "top-1",
                    "chance top-1",
                    "top-5",
                    "chance top-5",
                    "modality + position only (top-1 / top-5)",
                    "held-out patches",
                ],
                rows,
            ),
        ),
    ]


def caption_blocks(captions: dict[str, Any]) -> list:
    stats, cap, emb = captions["stats"], captions["run"], captions["embed"]
    rng = np.random.default_rng(0)
    rows = []
    for modality in ("CT", "MRI", "EM"):
        recs = [r for r in captions["records"] if r["modality"] == modality]
        for j in rng.choice(len(recs), size=min(2, len(recs)), replace=False) if recs else []:
            rows.append([recs[j]["volume"], ",".join(map(str, recs[j]["start"])), recs[j]["text"]])
    rate = f"{cap['per_second']:.0f} patches/s" if cap["written"] else "all cached"
    enc = f"{emb['per_second']:.0f} texts/s" if emb["encoded"] else "all cached"
    return [
        ("heading", "Generated text"),
        (
            "text",
            f"{stats['captions']} captions by the offline 'describe' captioner ({rate}); "
            f"{stats['distinct']:.0%} distinct, {stats['mean_words']:.0f} words on average. "
            f"{emb['unique']} distinct texts embedded with the frozen text encoder ({enc}).",
        ),
        ("table", (["volume", "box start (x,y,z)", "caption"], rows)),
    ]


def two_view_figure(cache: VolumeCache, cfg: Config, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, consistent = cfg.pretrain.patch_size, cfg.augment.caption_consistent
    data = TwoViewPatchDataset(cache, size, cfg.augment, 6, cfg.seed, caption_consistent=consistent)
    fig, axes = plt.subplots(2, 6, figsize=(14, 5))
    for i in range(6):
        item = data[i]
        for row, key in enumerate(("view1", "view2")):
            v = item[key][0]
            axes[row, i].imshow(v[:, :, v.shape[2] // 2].T.numpy(), cmap="gray", origin="lower")
            axes[row, i].axis("off")
        axes[0, i].set_title(cache.entries[item["case"]]["id"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
