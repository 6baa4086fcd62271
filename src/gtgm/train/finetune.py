"""``gtgm finetune``: segmentation fine-tuning with a share of the labels, from scratch or pretrained.

What is learnt and how it is scored comes from the task (:mod:`gtgm.train.tasks`): ``segmentation``
(CT/MRI: masked Dice + CE, Dice) or ``em`` (affinities, agglomeration, VOI / adapted Rand). Patches with
foreground oversampling (:class:`~gtgm.train.segdata.SegPatches`), validation by sliding-window
inference (MONAI) every ``val_every`` steps keeping ``best.pt``, checkpoints ``checkpoints/last.pt``
(resume), JSONL logs. At the end the best model is scored on the test split (``test_metrics.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtgm import runtime
from gtgm.config import Config
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import make_split
from gtgm.errors import GtgmError
from gtgm.fsutil import lock_folder, read_json, remove_stale_temps, write_json, write_text
from gtgm.models.checkpoint import load_checkpoint, load_weights, save_checkpoint
from gtgm.models.segmenters import load_encoder_weights
from gtgm.runtime import resolve_device
from gtgm.schemas import SPLIT_JSON
from gtgm.train.diagnostics import encoder_drift, encoder_weights
from gtgm.train.logs import RunLogger
from gtgm.train.optim import amp_setup, encoder_multiplier, optimizer_step, schedule_multiplier
from gtgm.train.pairs import StepSampler
from gtgm.train.segdata import SegPatches
from gtgm.train.tasks import build_segmenter, create_task


class Finetuner:
    def __init__(self, cfg: Config, resume: bool = False, progress: bool = True):
        f = cfg.finetune
        if not f.cache:
            raise GtgmError("finetune.cache is not set (give the preprocessed cache folder)")
        self.cfg, self.progress, self.out = cfg, progress, Path(f.out)
        written = cfg  # config.yaml holds the settings as given (a study compares them when it reuses the run)
        self.device = runtime.setup(resolve_device(cfg.device))
        self.rank, self.world = runtime.rank(), runtime.world_size()
        torch.manual_seed(cfg.seed)
        self.cache = VolumeCache(f.cache, group=f.group, labeled=True)
        self.cache.verify()  # damaged arrays or foreground indices: one line before --out is touched
        if cfg.model.ct_windows:
            cfg = self.cfg = with_ct_source(cfg, self.cache)
        channels = self.cache.entries[0]["channels"]
        if channels != cfg.model.in_channels:
            raise GtgmError(
                f"{self.cache.root}: cases have {channels} channel(s) but model.in_channels is {cfg.model.in_channels}"
            )
        self.task = create_task(cfg, self.cache)  # first: it tells a label map from neuron ids
        self.split = make_split(self.cache, f)
        self.task.weigh_classes(self.split["train"])
        self._check_spacing()
        self._check_cases()
        self.model = runtime.to_device(build_segmenter(cfg, self.task.outputs, f.task), self.device)
        self.loaded = load_encoder_weights(self.model, f.pretrained, cfg.model.encoder) if f.pretrained else None
        self.start = encoder_weights(self.model, self.model.encoder_prefix)  # for the drift the study reports
        self.net = runtime.keep_until_exit(DistributedDataParallel(self.model)) if self.world > 1 else self.model
        enc = set(id(p) for n, p in self.model.named_parameters() if n.startswith(self.model.encoder_prefix))
        self.enc_params = [p for p in self.model.parameters() if id(p) in enc]
        if not self.enc_params:
            raise GtgmError(
                f"model.encoder={cfg.model.encoder}: the segmenter has no parameters under its encoder prefix"
            )
        rest = [p for p in self.model.parameters() if id(p) not in enc]
        groups = [{"params": self.enc_params, "lr": f.lr * (f.encoder_lr_scale if f.pretrained else 1.0)}]
        self.opt = make_optimizer(f, [*groups, {"params": rest}])
        self.sched = torch.optim.lr_scheduler.LambdaLR(  # [encoder, the rest]
            self.opt,
            [
                lambda s: encoder_multiplier(s, f.freeze_encoder_steps, f.warmup_steps, f.steps, f.schedule),
                lambda s: schedule_multiplier(s, f.warmup_steps, f.steps, f.schedule),
            ],
        )
        self.amp_dtype, self.scaler = amp_setup(f.amp, self.device, "finetune.amp")
        self.step, self.best = 0, float("-inf")
        if resume:
            self._check_split()
            self._load(self.out / "checkpoints" / "last.pt")
        elif (self.out / "checkpoints" / "last.pt").exists():
            raise GtgmError(f"{self.out} already holds a run; pass --resume or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = lock_folder(self.out) if runtime.rank() == 0 else None  # a second process on this --out stops
        if runtime.rank() == 0:
            for folder in (self.out, self.out / "checkpoints"):
                remove_stale_temps(folder)  # left by a killed run
        write_text(self.out / "config.yaml", yaml.safe_dump(written.to_dict(), sort_keys=False))
        write_json(
            self.out / "split.json",
            {k: [p.to_dict() | {"id": self.cache.entries[p.case]["id"]} for p in v] for k, v in self.split.items()},
        )
        self.logger = RunLogger(self.out, f.tensorboard)

    def _check_spacing(self) -> None:
        """One model works at one spacing: ``best.pt`` records it for predict, so the cases must share it."""
        cases = sorted({p.case for parts in self.split.values() for p in parts})
        spacing = {str(self.cache.preprocess_settings(i).get("target_spacing")) for i in cases}
        if len(spacing) > 1:
            raise GtgmError(
                f"{self.cache.root}: the cases were cached at different spacings ({', '.join(sorted(spacing))}); "
                "choose one finetune.group, or preprocess them with one target spacing"
            )

    def _check_cases(self) -> None:
        """What the split's cases must have: a body mask (with ``body_crop``, for CT), and every class annotated in the
        validation and test cases (a partial-label case only trains)."""
        f, cases = self.cfg.finetune, sorted({p.case for parts in self.split.values() for p in parts})
        for i in cases if f.body_crop else []:
            e = self.cache.entries[i]
            if e["modality"] != "CT":
                continue
            if "body" not in e["files"]:
                raise GtgmError(f"{self.cache.root}: case {e['id']} has no body mask (cached before it existed); "
                                "re-run gtgm data preprocess, or set finetune.body_crop=false")  # fmt: skip
        partial = [self.cache.entries[p.case]["id"] for k in ("val", "test") for p in self.split[k]
                   if self.cache.label_classes(p.case) is not None]  # fmt: skip
        if partial:
            raise GtgmError(f"{', '.join(partial)}: partial labels (label_classes) can train, not validate or test")

    def _check_split(self) -> None:
        """A resumed run must keep its cases: the split recorded in ``split.json`` is recomputed exactly."""
        path = self.out / "split.json"
        if not path.is_file():
            return
        keys = ("case", "lo", "hi", "slices")
        old = {k: [{f: p.get(f) for f in keys} for p in v] for k, v in read_json(path, schema=SPLIT_JSON).items()}
        new = {k: [{f: getattr(p, f) for f in keys} for p in v] for k, v in self.split.items()}
        if old != new:
            raise GtgmError(
                f"{path}: this configuration splits the cases differently from the run being resumed "
                "(finetune.split_seed, label_ratio, fractions or the cache changed); resume with its config.yaml"
            )

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        load_weights(self.model, ckpt["model"], path)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.step, self.best = int(ckpt["step"]), float(ckpt["best"])

    def _save_last(self) -> None:
        save_checkpoint(
            self.out / "checkpoints" / "last.pt",
            {
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "step": self.step,
                "best": self.best,
            },
        )

    def _save_best(self, score: float) -> None:
        save_checkpoint(self.out / "best.pt", self._model_payload(score))

    def _save_snapshot(self, elapsed: float) -> None:
        """The model now as ``snapshots/step_N.pt`` (what ``gtgm predict`` loads), logged with the training
        seconds so far (``elapsed``: since the run started, snapshots' saving excluded)."""
        name = f"step_{self.step:06d}.pt"
        save_checkpoint(self.out / "snapshots" / name, self._model_payload(float("nan")))
        self.logger.log(self.step, {"snapshot": f"snapshots/{name}", "elapsed_s": elapsed})

    def _model_payload(self, score: float) -> dict[str, Any]:
        """What ``best.pt`` and a snapshot hold: the weights and what ``gtgm predict`` needs to use them."""
        c = self.cfg
        return {
            "model": self.model.state_dict(),
            "model_config": dataclasses.asdict(c.model),
            **self.task.meta(),
            "patch_size": c.finetune.patch_size,
            "preprocess": self.cache.preprocess_settings(self.split["train"][0].case),
            "modality": self.cache.entries[0]["modality"],
            "step": self.step,
            "val_score": score,
        }

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        frozen = self.step < self.cfg.finetune.freeze_encoder_steps
        if self.world == 1 and self.enc_params[0].requires_grad == frozen:  # (DDP keeps its gradient hooks)
            for p in self.enc_params:
                p.requires_grad_(not frozen)  # a frozen encoder needs no weight gradients: a faster backward
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.net(batch["image"].to(self.device))
        loss = self.task.loss(logits, batch["label"].to(self.device), batch.get("classes"))
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if frozen:
            for p in self.enc_params:
                p.grad = None  # frozen encoder: AdamW skips parameters without gradients
        optimizer_step(self.opt, self.scaler)
        self.sched.step()
        self.step += 1
        return float(loss.detach())

    def run(self) -> dict[str, Any]:
        f = self.cfg.finetune
        enhancing = getattr(self.task, "enhancing", {})
        data = SegPatches(
            self.cache, self.split["train"], f, self.cfg.seed, self.cfg.seg_augment, enhancing, self.task.outputs,
            getattr(self.task, "peaks", {}),
        )  # fmt: skip
        loader = iter(
            DataLoader(
                data,
                batch_size=f.batch_size,
                sampler=StepSampler(f.batch_size, self.step, self.rank, self.world),
                num_workers=f.num_workers,
            )
        )
        show = self.progress and self.rank == 0
        bar = tqdm(total=f.steps, initial=self.step, desc="finetune", unit="step", disable=not show)
        t0, done, saving = time.perf_counter(), 0, 0.0
        while self.step < f.steps:
            loss = self.train_step(next(loader))
            done += 1
            bar.update(1)
            best = {"best_val": f"{self.best:.3f}"} if math.isfinite(self.best) else {}  # (EM: -VOI)
            bar.set_postfix(loss=f"{loss:.3f}", **best)
            if self.step % f.log_every == 0:
                self.logger.log(
                    self.step,
                    {
                        "loss": loss,
                        "lr": self.sched.get_last_lr()[-1],
                        "lr_encoder": self.sched.get_last_lr()[0],
                        "samples_per_s": done * f.batch_size / (time.perf_counter() - t0),
                    },
                )
            if self.rank == 0 and not self.split["val"]:
                if self.step == f.steps:
                    self._save_best(float("nan"))  # no validation cases: the last model is the one kept
            elif self.rank == 0 and (self.step % f.val_every == 0 or self.step == f.steps):  # others wait
                res = self.task.score(self.model, self.split["val"], self.device)
                val = res["main"]
                values = {f"val/{k}": v for k, v in res["summary"].items() if isinstance(v, float)}
                if "dice_raw" in res:
                    values["val/dice_raw"] = res["dice_raw"]  # before post-processing
                self.logger.log(self.step, {**values, "val/score": val})  # score: mean Dice, or −VOI (EM)
                if val > self.best:
                    self.best = val
                    self._save_best(val)
            if self.rank == 0 and (self.step % f.checkpoint_every == 0 or self.step == f.steps):
                self._save_last()
            if self.rank == 0 and f.snapshot_every and self.step % f.snapshot_every == 0:
                now = time.perf_counter()
                self._save_snapshot(now - t0 - saving)
                saving += time.perf_counter() - now
        train_s = time.perf_counter() - t0 - saving
        bar.close()
        runtime.cleanup()  # every rank is here; the test scoring below is rank 0's alone (no collective)
        if self.rank != 0:
            return {}
        best = load_checkpoint(self.out / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        self.task.restore(best)
        test = self.task.score(self.model, self.split["test"], self.device, final=True) if self.split["test"] else None
        result = {
            "task": self.task.name,
            "test": test,
            "best_val": self.best if self.split["val"] else None,
            "loaded": self.loaded,
            "encoder_drift": encoder_drift(self.start, self.model, self.model.encoder_prefix),
            "steps": self.step,
            "train_s": train_s,  # this call's training loop: validations in, snapshots out (resumed: since resuming)
            "train_cases": [self.cache.entries[p.case]["id"] for p in self.split["train"]],
            "labelled_slices": [len(p.slices) if p.slices is not None else None for p in self.split["train"]],
        }
        write_json(self.out / "test_metrics.json", json.loads(json.dumps(result, default=float)))
        self.logger.close()
        return result


def make_optimizer(f: Any, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``finetune.optimizer``: ``adamw`` (gtgm's default) or ``sgd``, nnU-Net's (momentum 0.99, Nesterov), both with
    ``finetune.weight_decay`` and base lr ``finetune.lr``."""
    if f.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=f.lr, momentum=0.99, nesterov=True, weight_decay=f.weight_decay)
    return torch.optim.AdamW(groups, lr=f.lr, weight_decay=f.weight_decay)


def with_ct_source(cfg: Config, cache: VolumeCache) -> Config:
    """``cfg`` with ``model.ct_source_window`` set to the HU window the cache's CT cases were normalised with (the
    one channel the network's CT windows are computed from, :mod:`gtgm.models.windows`)."""
    windows = set()
    for i, e in enumerate(cache.entries):
        records = cache.meta(i).get("normalization") or [{}]
        if e["modality"] != "CT" or len(records) != 1 or records[0].get("method") != "ct_window":
            raise GtgmError(
                f"{cache.root}: model.ct_windows needs one CT channel normalised with an HU window per case; case "
                f"{e['id']} is {e['modality']} with {len(records)} channel(s)"
            )
        windows.add(tuple(records[0]["window"]))
    if len(windows) != 1:
        raise GtgmError(f"{cache.root}: the CT cases were cached with different HU windows {sorted(windows)}")
    source = list(windows.pop())
    if cfg.model.ct_source_window not in (None, source):
        raise GtgmError(f"model.ct_source_window {cfg.model.ct_source_window} is not the cache's window {source}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ct_source_window=source))


def finetune(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    tuner = runtime.keep_until_exit(Finetuner(cfg, resume, progress))
    if tuner.loaded:
        s = tuner.loaded
        print(
            f"[finetune] {cfg.finetune.pretrained}: {s['matched']} tensors loaded, {s['missing']} encoder "
            f"tensors missing, {s['unexpected']} unexpected"
        )
    try:
        return tuner.run()
    finally:
        if tuner.lock is not None:
            tuner.lock.release()
