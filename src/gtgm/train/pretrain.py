"""``gtgm pretrain``: GTGM image-text + two-view pretraining of a 3D encoder, on CPU, one GPU or torchrun.

Per step: ``grad_accum`` micro-batches of the objective's samples (``pretrain.objective``, a row of
:data:`~gtgm.train.objectives.OBJECTIVES`: for ``gtgm``, two augmented views + frozen caption embeddings ->
:class:`~gtgm.models.vlp.VLPModel` -> :class:`~gtgm.train.losses.GTGMLoss`, global batch under DDP) -> AdamW
with linear warmup + cosine decay, optional AMP and gradient clipping. Every ``checkpoint_every`` steps
``checkpoints/last.pt`` is replaced atomically (model, optimizer, scheduler, scaler, RNG, step,
config); ``--resume`` continues from it with exactly the samples the uninterrupted run would have seen.
Logs go to ``log.jsonl`` and TensorBoard; image->text retrieval on held-out patches is logged every
``eval_every`` steps. At the end: ``encoder.pt`` (plain state dict keyed as in the segmenter; for
``swinunetr`` it loads into ``monai.networks.nets.SwinUNETR``), ``encoder.json`` and ``heads.pt`` (projection
heads and temperature, for ``gtgm query``).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtgm import runtime
from gtgm.config import Config
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError
from gtgm.fsutil import lock_folder, remove_stale_temps, write_json, write_text
from gtgm.models.checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from gtgm.models.resenc import model_arch_kwargs
from gtgm.runtime import resolve_device
from gtgm.text.captions import check_fields, read_captions
from gtgm.text.encoders import TextCache
from gtgm.train.diagnostics import feature_stats
from gtgm.train.logs import RunLogger
from gtgm.train.objectives import objective_of
from gtgm.train.optim import amp_setup, optimizer_step, warmup_cosine
from gtgm.train.pairs import CaptionPairs, StepSampler, split_records
from gtgm.train.regions import RegionCrops
from gtgm.train.reserved import drop_reserved, reserved_regions


def load_data(cfg: Config, progress: bool = False) -> tuple[Any, CaptionPairs | None, dict[str, Any]]:
    """Training samples (the objective's: :class:`CaptionPairs` of boxes or :class:`RegionCrops`), held-out pairs
    (whole volumes; None where the objective has no retrieval check) and the record of what was reserved for
    fine-tuning."""
    p, objective = cfg.pretrain, objective_of(cfg)
    for key in ("cache", "captions", "text_cache"):
        if not getattr(p, key):
            raise GtgmError(f"pretrain.{key} is not set (give --{key.replace('_', '-')} or pretrain.{key}=PATH)")
    cache = VolumeCache(p.cache)
    text_cache = TextCache(p.text_cache)
    text_cache.require_encoder(cfg.text)
    records = read_captions(p.captions)
    for rec in records:
        check_fields(rec)
    labelled = VolumeCache(cfg.finetune.cache) if cfg.finetune.cache else cache  # the split fine-tuning makes
    reserved = reserved_regions(labelled, cfg) if p.exclude_finetune_eval else {"regions": [], "unsplittable": {}}
    records, dropped = drop_reserved(records, reserved["regions"])
    reserved["dropped_boxes"] = len(dropped)
    reserved["dropped_volumes"] = sorted({r["volume"] for r in dropped})
    train, held = split_records(records, p.holdout_fraction)
    reserved["retrieval_volumes"] = sorted({r["volume"] for r in held})
    if objective.samples == "crops":
        crop = p.region_crop or cfg.finetune.patch_size
        args = (text_cache, crop, cfg.augment, objective.target, cfg.seed, progress, reserved["regions"])
        pairs = RegionCrops(cache, train, *args)
    else:
        pairs = CaptionPairs(cache, train, text_cache, p.patch_size, cfg.augment, cfg.seed, p.text_control)
    if not held or not objective.retrieval:
        return pairs, None, reserved
    rng = torch.Generator().manual_seed(cfg.seed)
    held = [held[i] for i in torch.randperm(len(held), generator=rng)[: p.eval_patches].tolist()]
    return pairs, CaptionPairs(cache, held, text_cache, p.patch_size, None, cfg.seed), reserved


def _optimizer(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for module in (model, loss_fn):
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)  # no decay on norms, biases, temperature
    groups = [{"params": decay, "weight_decay": cfg.pretrain.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.pretrain.lr)


class Pretrainer:
    """Holds the run's parts; ``run()`` trains to ``pretrain.steps`` and exports the encoder."""

    def __init__(self, cfg: Config, resume: bool = False, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.device = runtime.setup(resolve_device(cfg.device))
        self.rank, self.world = runtime.rank(), runtime.world_size()
        if self.device.type == "cpu" and self.world > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", self.world))))
        self.out = Path(cfg.pretrain.out)
        torch.manual_seed(cfg.seed)
        self.pairs, self.held, self.reserved = load_data(cfg, progress and self.rank == 0)
        p, self.objective = cfg.pretrain, objective_of(cfg)
        self.model = runtime.to_device(self.objective.model(cfg, self.pairs), self.device)
        self.loss_fn = self.objective.loss(cfg, self.pairs, self.world).to(self.device)
        ddp = self.objective.ddp_kwargs
        self.net = runtime.keep_until_exit(DistributedDataParallel(self.model, **ddp)) if self.world > 1 else self.model
        self.opt = _optimizer(self.model, self.loss_fn, cfg)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, p.warmup_steps, p.steps, p.min_lr / p.lr if p.lr else 0.0)
        )
        self.amp_dtype, self.scaler = amp_setup(cfg.pretrain.amp, self.device, "pretrain.amp")
        self.step = 0
        self._start(resume)
        self.logger = RunLogger(self.out, p.tensorboard, enabled=self.rank == 0)

    def _start(self, resume: bool) -> None:
        last = self.out / "checkpoints" / "last.pt"
        if resume:
            self.load(last)
        elif last.exists():
            raise GtgmError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        self.lock = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock = lock_folder(self.out)  # one writer: a second process on this --out stops here
            for folder in (self.out, self.out / "checkpoints"):
                remove_stale_temps(folder)  # left by a killed run
            write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            write_json(self.out / "reserved.json", self.reserved)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "step": self.step,
            "config": self.cfg.to_dict(),
        }

    def load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        load_weights(self.model, ckpt["model"], path)
        self.loss_fn.load_state_dict(ckpt["loss"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.out / "checkpoints" / "last.pt", self.state())

    def loader(self) -> DataLoader:
        p = self.cfg.pretrain
        sampler = StepSampler(p.batch_size, self.step * p.grad_accum, self.rank, self.world)
        return DataLoader(
            self.pairs,
            batch_size=p.batch_size,
            sampler=sampler,
            num_workers=p.num_workers,
            persistent_workers=p.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )

    def train_step(self, batches: Any) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean of each loss term."""
        accum, terms = self.cfg.pretrain.grad_accum, {}
        inputs = getattr(self.model, "inputs", ("view1", "view2", "text"))
        self.opt.zero_grad(set_to_none=True)
        for a in range(accum):
            batch = next(batches)
            sync = self.net.no_sync() if (self.world > 1 and a < accum - 1) else nullcontext()
            with (
                sync,
                torch.autocast(self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None),
            ):
                out = self.net(*(batch[k].to(self.device, non_blocking=True) for k in inputs))
                losses = self.loss_fn(**{k: v.float() if v.is_floating_point() else v for k, v in out.items()})
                total = sum(losses.values()) / accum
            feats = out.get("image_features_1", out.get("region_features"))
            if a == 0 and feats is not None and feats.shape[0] > 1:  # collapse shows here before any probe
                terms.update(feature_stats(feats))
            (self.scaler.scale(total) if self.scaler else total).backward()
            for k, v in losses.items():
                terms[k] = terms.get(k, 0.0) + float(v.detach()) / accum
        norm = optimizer_step(self.opt, self.scaler, list(self.model.parameters()), self.cfg.pretrain.grad_clip)
        if norm is not None:
            terms["grad_norm"] = norm
        self.sched.step()
        self.step += 1
        terms["loss"] = sum(v for k, v in terms.items() if k.endswith("_loss"))  # feature_std, effective_rank: logged
        return terms

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``pretrain.steps``; with ``stop_after``, stop (checkpointed) after that many steps."""
        p = self.cfg.pretrain
        end = p.steps if stop_after is None else min(p.steps, self.step + stop_after)
        batches = iter(self.loader())
        bar = tqdm(
            total=p.steps,
            initial=self.step,
            desc="pretrain",
            unit="step",
            disable=not (self.progress and self.rank == 0),
        )
        t0, done, last_eval = time.perf_counter(), 0, {}
        while self.step < end:
            terms = self.train_step(batches)
            done += 1
            rate = done * p.batch_size * p.grad_accum * self.world / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}", samples_s=f"{rate:.1f}")
            if self.step % p.log_every == 0 or self.step == p.steps:
                self.logger.log(self.step, {**terms, "lr": self.sched.get_last_lr()[0], "samples_per_s": rate})
            if self.held is not None and (self.step % p.eval_every == 0 or self.step == p.steps):
                last_eval = self.evaluate()
            if self.step % p.checkpoint_every == 0 or self.step in (p.steps, end):
                self.save()
        bar.close()
        if self.step == p.steps:
            self.export(last_eval)
        self.logger.close()
        return {"step": self.step, "retrieval": last_eval, "out": str(self.out), "finished": self.step == p.steps}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Image->text retrieval on the held-out patches (rank 0 logs it): top-1/top-5 and chance."""
        from gtgm.train.retrieval import retrieval_accuracy

        result = retrieval_accuracy(self.model, self.held, self.device) if self.rank == 0 else {}
        self.logger.log(self.step, {f"retrieval/{k}": v for k, v in result.items()})
        return result

    def export(self, retrieval: dict[str, float]) -> None:
        if self.rank != 0:
            return
        if self.objective.heads:  # what gtgm query needs (the other objectives have no heads to query with)
            save_checkpoint(self.out / "heads.pt", self.heads_state())
        m = self.cfg.model
        volumes = {r["volume"] for r in self.pairs.records}
        write_json(
            self.out / "encoder.json",
            {
                "encoder": m.encoder,
                "objective": self.cfg.pretrain.objective,
                "in_channels": m.in_channels,
                "channels": m.channels,
                "feature_size": m.feature_size,
                # the prefix encoder.pt's keys lack in the segmenter (masked modelling saves segmenter keys: none)
                "segmenter_prefix": getattr(getattr(self.model, "encoder", None), "segmenter_prefix", ""),
                "patch_size": getattr(self.pairs, "crop", self.cfg.pretrain.patch_size),  # what the encoder saw
                "steps": self.step,
                "text_encoder": self.pairs.text_cache.encoder,
                "retrieval": retrieval,
                "train_volumes": sorted(volumes),
                "spacing": self._median_spacing(volumes),
                "preprocess": self.pairs.cache.index.get("config"),  # the cache's normalisation, for gtgm query
                "spacing_by_modality": {
                    mod: self._median_spacing(volumes, mod)
                    for mod in sorted({e["modality"] for e in self.pairs.cache.entries if e["id"] in volumes})
                },
                "reserved_for_finetuning": self.reserved["regions"],
                **({"arch_kwargs": model_arch_kwargs(m)} if m.encoder == "resenc" else {}),
            },
        )
        save_checkpoint(
            self.out / "encoder.pt", self.model.encoder_weights()
        )  # last: its presence marks a finished run

    def heads_state(self) -> dict[str, torch.Tensor]:
        """What ``gtgm query`` needs beside ``encoder.pt``: the image and text heads (``image_head.*``,
        ``text_head.*``) and the CLIP temperature (``clip.log_scale`` = log(1/τ))."""
        heads = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if "_head." in k}
        heads["clip.log_scale"] = self.loss_fn.clip.log_scale.detach().cpu().clone()
        return heads

    def _median_spacing(self, volumes: set[str], modality: str | None = None) -> list[float] | None:
        """Median voxel size (x, y, z) of the pretraining volumes (of ``modality``), as cached (None if the cache
        lacks it)."""
        found = [
            e["spacing"]
            for e in self.pairs.cache.index["cases"]
            if e.get("id") in volumes and "spacing" in e and modality in (None, e.get("modality"))
        ]
        return [float(v) for v in np.median(np.asarray(found, dtype=float), axis=0)] if found else None


def pretrain(cfg: Config, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) pretraining as configured; under torchrun every process calls this.

    ``stop_after``: leave after that many steps with a checkpoint (e.g. to fit a cluster time limit);
    ``resume=True`` continues later.
    """
    trainer = None
    try:
        trainer = runtime.keep_until_exit(Pretrainer(cfg, resume, progress))
        result = trainer.run(stop_after)
    finally:
        if trainer is not None and trainer.lock is not None:
            trainer.lock.release()
    runtime.cleanup()  # only after a run every rank finished (runtime.cleanup says why)
    return result
