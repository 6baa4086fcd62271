"""``hf``: any transformers image-to-text / vision-language model from a local folder or hub id.

Each patch is shown as one axial slice (``caption.slice``: central, random or most informative),
stretched to uint8 and converted to RGB. Two prompting modes:

* plain (BLIP and other captioners): ``processor(images, text=prompt)`` — the prompt, if any, is a text
  prefix the model continues (the paper used BLIP this way);
* ``caption.chat_template: true`` (chat VLMs such as LLaVA or Qwen-VL): the image and the prompt are
  wrapped in the processor's chat template, and only the newly generated tokens are decoded.

Weights load with ``local_files_only`` for folders; ``trust_remote_code`` stays off unless configured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gtgm.config import CaptionConfig
from gtgm.data.boxes import Patch
from gtgm.errors import GtgmError
from gtgm.runtime import resolve_device
from gtgm.text.captioners.base import slice_index, slice_uint8


class HFCaptioner:
    name = "hf"

    def __init__(self, cfg: CaptionConfig, device: str = "auto"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not cfg.model:
            raise GtgmError("caption.model must name a local folder or hub id for the 'hf' captioner")
        local = Path(cfg.model).expanduser()
        looks_local = local.exists() or cfg.model.startswith((".", "/", "~"))
        if looks_local and not local.is_dir():
            raise GtgmError(f"{cfg.model}: captioner model folder not found")
        kwargs = {"local_files_only": True} if looks_local else {}
        try:
            self.processor = AutoProcessor.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code, **kwargs)
            self.model = AutoModelForImageTextToText.from_pretrained(
                cfg.model, trust_remote_code=cfg.trust_remote_code, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise GtgmError(f"{cfg.model}: cannot load the image-to-text model ({exc})") from exc
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.cfg = cfg
        self.version = f"{Path(cfg.model).name or cfg.model}"

    def _images(self, patches: list[Patch], seed: int) -> list:
        from PIL import Image

        out = []
        for p in patches:
            pixels = slice_uint8(p, slice_index(p, self.cfg.slice, seed))
            out.append(Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB"))
        return out

    def _inputs(self, images: list, patches: list[Patch]) -> dict:
        prompt = self.cfg.prompt
        if self.cfg.chat_template:
            texts = []
            for p in patches:
                text = (prompt or "Describe this {modality} image.").format(modality=p.modality)
                msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True))
            return self.processor(images=images, text=texts, return_tensors="pt", padding=True, truncation=True)
        if prompt:
            texts = [prompt.format(modality=p.modality) for p in patches]
            return self.processor(images=images, text=texts, return_tensors="pt", padding=True, truncation=True)
        return self.processor(images=images, return_tensors="pt")

    @torch.no_grad()
    def caption(self, patches: list[Patch], seed: int) -> list[str]:
        torch.manual_seed(seed)
        inputs = self._inputs(self._images(patches, seed), patches).to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        if self.cfg.chat_template and "input_ids" in inputs:
            out = out[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]
