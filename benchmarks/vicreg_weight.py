"""The weight of VICReg as GTGM's image-image term: the value that makes it start at the size of Barlow Twins'.

    python benchmarks/vicreg_weight.py --cache C --captions X --text-cache T [--config study/cpu-label-limited]
        [--batches 8] [key=value ...]

Builds the preset's pretraining run (model, views, batch) on the given corpus at initialisation, draws its first
``--batches`` batches (two views of each caption box), and evaluates both negative-free terms on the same projected
image features: Barlow Twins (λ = 0.0051, standardised) and VICReg (25, 25, 1). Prints the mean of each, their ratio,
and the weight ``w = 0.01 × mean(BT) / mean(VICReg)`` that gives VICReg the start GTGM's λ = 0.01 gives Barlow Twins
(study arm ``gtgm_vicreg``). Nothing is trained; the run folder is a temporary one.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from gtgm.config import load_config
from gtgm.train.losses import barlow_twins_loss, vicreg_loss
from gtgm.train.pretrain import Pretrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--text-cache", required=True)
    ap.add_argument("--config", default="study/cpu-label-limited")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            a.config,
            [
                f"pretrain.cache={a.cache}",
                f"pretrain.captions={a.captions}",
                f"pretrain.text_cache={a.text_cache}",
                f"pretrain.out={tmp}/run",
                "pretrain.num_workers=0",
                "pretrain.tensorboard=false",
                *a.overrides,
            ],
        )
        trainer = Pretrainer(cfg, progress=False)
        batches, bt, vic = iter(trainer.loader()), [], []
        # train mode, as the loss sees the features in training (BatchNorm on the batch's statistics)
        with torch.no_grad():
            for _ in range(a.batches):
                batch = next(batches)
                out = trainer.model(*(batch[k].to(trainer.device) for k in ("view1", "view2", "text")))
                z1, z2 = out["image_features_1"].float(), out["image_features_2"].float()
                bt.append(float(barlow_twins_loss(z1, z2, cfg.loss.barlow_lambda)))
                vic.append(float(vicreg_loss(z1, z2)))
        trainer.logger.close()
        trainer.lock.release()
    ratio = float(np.mean(bt) / np.mean(vic))
    print(
        f"{a.batches} batches of {cfg.pretrain.batch_size}, projector dim {z1.shape[1]} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(f"Barlow Twins: mean {np.mean(bt):.2f} (min {min(bt):.2f}, max {max(bt):.2f})")
    print(f"VICReg:       mean {np.mean(vic):.2f} (min {min(vic):.2f}, max {max(vic):.2f})")
    print(f"ratio BT / VICReg {ratio:.2f}: VICReg weight for the start of 0.01 x Barlow Twins = {0.01 * ratio:.3f}")


if __name__ == "__main__":
    main()
