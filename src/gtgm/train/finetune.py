"""``gtgm finetune``: segmentation fine-tuning with a share of the labels, from scratch or pretrained.

Loss: Dice + cross-entropy (MONAI ``DiceLoss`` on softmax probabilities + ``F.cross_entropy``), both
restricted to labelled voxels (label ``IGNORE`` is skipped; with every voxel labelled this is MONAI's
``DiceCELoss``). Patches with foreground oversampling (:class:`~gtgm.train.segdata.SegPatches`),
validation by sliding-window inference (MONAI) every ``val_every`` steps keeping ``best.pt``,
checkpoints ``checkpoints/last.pt`` (resume), JSONL logs. At the end the best model is scored on the
test split: per-class Dice and HD95 in ``test_metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtgm.config import Config
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError
from gtgm.fsutil import write_json, write_text
from gtgm.metrics import dice_per_class, hd95_per_class
from gtgm.models.registry import create_segmenter
from gtgm.models.segmenters import load_encoder_weights
from gtgm.runtime import resolve_device
from gtgm.train import distributed as dist
from gtgm.train.checkpoint import load_checkpoint, save_checkpoint
from gtgm.train.logs import RunLogger
from gtgm.train.pairs import StepSampler
from gtgm.train.pretrain import _amp, warmup_cosine
from gtgm.train.segdata import IGNORE, Part, SegPatches, make_split, part_arrays

_dice = DiceLoss(include_background=True, softmax=False, to_onehot_y=False)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + CE over labelled voxels. ``logits`` (B, K, ...), ``target`` (B, 1, ...) int64 (IGNORE = -1)."""
    valid = (target != IGNORE).float()
    t = target.clamp_min(0)
    ce = F.cross_entropy(logits.float(), torch.where(target[:, 0] == IGNORE, -100, t[:, 0]), ignore_index=-100)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(t[:, 0], logits.shape[1]).movedim(-1, 1).float() * valid
    return _dice(probs, onehot) + ce


def build_segmenter(cfg: Config, num_classes: int) -> torch.nn.Module:
    m = cfg.model
    return create_segmenter(
        m.encoder,
        num_classes,
        in_channels=m.in_channels,
        channels=m.channels,
        feature_size=m.feature_size,
        use_checkpoint=m.use_checkpoint,
    )


@torch.no_grad()
def predict_array(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: list[int],
    overlap: float = 0.25,
    sw_batch: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Sliding-window argmax label map (X, Y, Z) of a (C, X, Y, Z) array."""
    model.eval()
    x = torch.from_numpy(np.array(image, dtype=np.float32))[None].to(device)
    logits = sliding_window_inference(x, patch, sw_batch, model, overlap=overlap, mode="gaussian")
    return logits.argmax(1)[0].cpu().numpy().astype(np.uint8)


def _num_classes(cache: VolumeCache, group: str | None) -> tuple[int, dict[str, str]]:
    labels = cache.index["groups"].get(group or "default", {}).get("labels", {})
    values = [int(k) for k in labels] + [
        v for i in range(len(cache)) for v in (cache.meta(i).get("label_values") or [])
    ]
    return max(values) + 1 if values else 2, labels


class Finetuner:
    def __init__(self, cfg: Config, resume: bool = False, progress: bool = True):
        f = cfg.finetune
        if not f.cache:
            raise GtgmError("finetune.cache is not set (give the preprocessed cache folder)")
        self.cfg, self.progress, self.out = cfg, progress, Path(f.out)
        self.device = dist.setup(resolve_device(cfg.device))
        self.rank, self.world = dist.rank(), dist.world_size()
        torch.manual_seed(cfg.seed)
        self.cache = VolumeCache(f.cache, group=f.group, labeled=True)
        self.num_classes, self.labels = _num_classes(self.cache, f.group)
        _check_task(self.cache, f, self.labels, cfg.model.in_channels)
        self.split = make_split(self.cache, f, cfg.seed)
        self.model = build_segmenter(cfg, self.num_classes).to(self.device)
        self.loaded = load_encoder_weights(self.model, f.pretrained, cfg.model.encoder) if f.pretrained else None
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        enc = set(id(p) for n, p in self.model.named_parameters() if n.startswith(self.model.encoder_prefix))
        self.enc_params = [p for p in self.model.parameters() if id(p) in enc]
        rest = [p for p in self.model.parameters() if id(p) not in enc]
        self.opt = torch.optim.AdamW(
            [{"params": self.enc_params, "lr": f.lr * f.encoder_lr_scale}, {"params": rest}],
            lr=f.lr,
            weight_decay=f.weight_decay,
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, f.warmup_steps, f.steps, 0.0)
        )
        self.amp_dtype, self.scaler = _amp_for(cfg, self.device)
        self.step, self.best = 0, -1.0
        if resume:
            self._load(self.out / "checkpoints" / "last.pt")
        elif (self.out / "checkpoints" / "last.pt").exists():
            raise GtgmError(f"{self.out} already holds a run; pass --resume or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(
            self.out / "split.json",
            {k: [p.to_dict() | {"id": self.cache.entries[p.case]["id"]} for p in v] for k, v in self.split.items()},
        )
        self.logger = RunLogger(self.out, f.tensorboard)

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        self.model.load_state_dict(ckpt["model"])
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
        c = self.cfg
        save_checkpoint(
            self.out / "best.pt",
            {
                "model": self.model.state_dict(),
                "model_config": dataclasses.asdict(c.model),
                "num_classes": self.num_classes,
                "labels": self.labels,
                "patch_size": c.finetune.patch_size,
                "preprocess": dataclasses.asdict(c.preprocess),
                "modality": self.cache.entries[0]["modality"],
                "step": self.step,
                "val_dice": score,
            },
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.net(batch["image"].to(self.device))
        loss = seg_loss(logits, batch["label"].to(self.device))
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.step < self.cfg.finetune.freeze_encoder_steps:
            for p in self.enc_params:
                p.grad = None  # frozen encoder: AdamW skips parameters without gradients
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        self.step += 1
        return float(loss.detach())

    def score(self, parts: list[Part], hd95: bool = False) -> dict[str, Any]:
        """Per-class Dice (and HD95) of sliding-window predictions on ``parts``, and their means."""
        f, classes = self.cfg.finetune, list(range(1, self.num_classes))
        rows = []
        for p in parts:
            image, label = part_arrays(self.cache, p)
            pred = predict_array(self.model, image, f.patch_size, f.sw_overlap, f.sw_batch_size, self.device)
            row = {"case": self.cache.entries[p.case]["id"], "dice": dice_per_class(pred, label, classes)}
            if hd95:
                row["hd95"] = hd95_per_class(pred, label, classes, self.cache.entries[p.case]["spacing"])
            rows.append(row)
        mean = {c: float(np.mean([r["dice"][c] for r in rows])) for c in classes}
        return {"cases": rows, "dice": mean, "mean_dice": float(np.mean(list(mean.values())))}

    def run(self) -> dict[str, Any]:
        f = self.cfg.finetune
        data = SegPatches(self.cache, self.split["train"], f.patch_size, f.foreground_ratio, self.cfg.seed)
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
        t0, done = time.perf_counter(), 0
        while self.step < f.steps:
            loss = self.train_step(next(loader))
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.step % f.log_every == 0:
                self.logger.log(
                    self.step,
                    {
                        "loss": loss,
                        "lr": self.sched.get_last_lr()[-1],
                        "samples_per_s": done * f.batch_size / (time.perf_counter() - t0),
                    },
                )
            if self.rank == 0 and (
                self.step % f.val_every == 0 or self.step == f.steps
            ):  # others wait at the next step
                val = self.score(self.split["val"])["mean_dice"]
                self.logger.log(self.step, {"val/mean_dice": val})
                if val > self.best:
                    self.best = val
                    self._save_best(val)
            if self.rank == 0 and (self.step % f.checkpoint_every == 0 or self.step == f.steps):
                self._save_last()
        bar.close()
        if self.rank != 0:
            return {}
        self.model.load_state_dict(load_checkpoint(self.out / "best.pt", self.device)["model"])
        test = self.score(self.split["test"], hd95=True)
        result = {
            "test": test,
            "best_val_dice": self.best,
            "loaded": self.loaded,
            "steps": self.step,
            "train_cases": [self.cache.entries[p.case]["id"] for p in self.split["train"]],
            "labelled_slices": [len(p.slices) if p.slices is not None else None for p in self.split["train"]],
        }
        write_json(self.out / "test_metrics.json", json.loads(json.dumps(result, default=float)))
        self.logger.close()
        return result


def _check_task(cache: VolumeCache, f: Any, labels: dict[str, str], in_channels: int) -> None:
    """A preset names its task's labels and channels: refuse data that does not match them."""
    if (
        f.task_labels
        and labels
        and {str(k): v for k, v in f.task_labels.items()} != {str(k): v for k, v in labels.items()}
    ):
        raise GtgmError(f"{cache.root}: labels {labels} differ from the preset's task_labels {f.task_labels}")
    channels = cache.entries[0]["channels"]
    if channels != in_channels:
        raise GtgmError(f"{cache.root}: cases have {channels} channel(s) but model.in_channels is {in_channels}")


def _amp_for(cfg: Config, device: torch.device) -> tuple[Any, Any]:
    shim = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, amp=cfg.finetune.amp))
    return _amp(shim, device)


def finetune(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    tuner = Finetuner(cfg, resume, progress)
    if tuner.loaded:
        s = tuner.loaded
        print(
            f"[finetune] {cfg.finetune.pretrained}: {s['matched']} tensors loaded, {s['missing']} encoder "
            f"tensors missing, {s['unexpected']} unexpected"
        )
    return tuner.run()
