"""``openai``: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp server, hosted).

Captioning sends, per patch, the system prompt and a user message holding the chosen axial slice as a
base64 PNG ``image_url`` part (plus ``caption.prompt`` as text, if set). Refining (``--refine``) sends an
existing caption as text only, asking for report style. Requests run ``caption.concurrency`` at a time;
connection errors, timeouts, 429 and 5xx answers are retried ``caption.retries`` times with exponential
backoff, then raise an error naming the patch; other 4xx answers and malformed responses raise at once.
The API key is read from the environment variable named by ``caption.api_key_env`` and never logged.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gtgm.config import CaptionConfig
from gtgm.data.boxes import Patch
from gtgm.errors import GtgmError
from gtgm.text.captioners.base import slice_index, slice_uint8


def png_base64(pixels: np.ndarray) -> str:
    """uint8 (H, W) array -> base64 PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIChat:
    """A chat-completions client with retries, backoff and errors that name the item."""

    def __init__(self, cfg: CaptionConfig):
        import openai

        if not cfg.model:
            raise GtgmError("caption.model must name the model served at caption.base_url")
        self.cfg = cfg
        self._key = os.environ.get(cfg.api_key_env) or ""
        self.client = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=self._key or "EMPTY",
            timeout=cfg.timeout,
            max_retries=0,
        )

    def complete(self, messages: list[dict[str, Any]], what: str) -> str:
        """The model's answer to ``messages``; errors never carry the API key (a server may echo it)."""
        try:
            return self._complete(messages, what)
        except GtgmError as exc:
            message = str(exc)
            if len(self._key) >= 4:
                message = message.replace(self._key, "[API key]")
            raise GtgmError(message) from None

    def _complete(self, messages: list[dict[str, Any]], what: str) -> str:
        import openai

        retryable = (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        )
        for attempt in range(self.cfg.retries + 1):
            try:
                resp = self.client.chat.completions.create(
                    model=self.cfg.model,
                    messages=messages,
                    temperature=self.cfg.temperature,
                    max_tokens=self.cfg.max_new_tokens,
                )
                text = resp.choices[0].message.content if resp.choices else None
                if not isinstance(text, str) or not text.strip():
                    raise GtgmError(f"{self.cfg.base_url}: empty or malformed answer for {what}")
                return " ".join(text.split())
            except retryable as exc:
                if attempt == self.cfg.retries:
                    raise GtgmError(
                        f"{self.cfg.base_url}: request for {what} failed after {attempt + 1} tries "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                time.sleep(self.cfg.backoff * 2**attempt)
            except openai.APIStatusError as exc:
                raise GtgmError(
                    f"{self.cfg.base_url}: server refused the request for {what} "
                    f"(HTTP {exc.status_code}: {exc.message})"
                ) from exc
            except (json.JSONDecodeError, ValueError, AttributeError, IndexError, TypeError, openai.APIError) as exc:
                if isinstance(exc, GtgmError):
                    raise
                raise GtgmError(
                    f"{self.cfg.base_url}: malformed answer for {what} ({type(exc).__name__}: {exc})"
                ) from exc
        raise AssertionError("unreachable")

    def map(self, jobs: list[tuple[list[dict[str, Any]], str]]) -> list[str]:
        """Run ``complete`` over ``(messages, what)`` jobs, ``concurrency`` at a time, results in order."""
        failed = threading.Event()  # after a failure, requests not yet started are skipped

        def run(job: tuple[list[dict[str, Any]], str]) -> str | None:
            if failed.is_set():
                return None
            try:
                return self.complete(*job)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max(1, self.cfg.concurrency)) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            return [f.result() for f in futures]  # type: ignore[misc]


class OpenAICaptioner:
    """Image captions from a vision-language model behind an OpenAI-compatible server."""

    name = "openai"

    def __init__(self, cfg: CaptionConfig):
        self.chat = OpenAIChat(cfg)
        self.cfg = cfg
        self.version = cfg.model

    def messages(self, patch: Patch, seed: int) -> list[dict[str, Any]]:
        pixels = slice_uint8(patch, slice_index(patch, self.cfg.slice, seed))
        content: list[dict[str, Any]] = []
        if self.cfg.prompt:
            content.append({"type": "text", "text": self.cfg.prompt.format(modality=patch.modality)})
        content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_base64(pixels)}"}})
        return [
            {"role": "system", "content": self.cfg.system_prompt.format(modality=patch.modality)},
            {"role": "user", "content": content},
        ]

    def caption(self, patches: list[Patch], seed: int) -> list[str]:
        return self.chat.map([(self.messages(p, seed), f"patch {p.key}") for p in patches])


class OpenAIRefiner:
    """Rewrites existing captions in radiology-report style (the paper's "LLM generates medical text")."""

    name = "openai-refine"

    def __init__(self, cfg: CaptionConfig):
        self.chat = OpenAIChat(cfg)
        self.cfg = cfg
        self.version = cfg.model

    def refine(self, records: list[dict[str, Any]]) -> list[str]:
        jobs = []
        for r in records:
            prompt = self.cfg.refine_prompt.format(modality=r.get("modality", "medical"), text=r["text"])
            jobs.append(([{"role": "user", "content": prompt}], f"patch {r['key']}"))
        return self.chat.map(jobs)
