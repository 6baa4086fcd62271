"""The openai captioner against a small OpenAI-compatible server on 127.0.0.1 started by the test."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from gtgm.cli import main
from gtgm.config import CaptionConfig
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError
from gtgm.text.captioners import create_captioner
from gtgm.text.captions import read_captions, run_captioning

KEY = "sk-test-secret-0123456789"


class FakeServer:
    """Answers /v1/chat/completions like the real API; ``mode`` switches to error answers."""

    def __init__(self):
        self.requests: list[dict] = []
        self.mode = "ok"
        self.fail_after = None  # answer 503 once this many requests succeeded
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                ok_so_far = sum(1 for r in server.requests[:-1] if r.get("ok"))
                if server.mode == "echo":  # a server that repeats the credentials in its error text
                    auth = self.headers.get("Authorization")
                    return self._send(401, {"error": {"message": f"bad credentials {auth}", "type": "auth_error"}})
                if server.mode == "400":
                    return self._send(400, {"error": {"message": "model not found", "type": "invalid_request_error"}})
                if server.mode == "bad":
                    return self._send(200, b'{"choices": [ this is not json')
                if server.fail_after is not None and ok_so_far >= server.fail_after:
                    return self._send(503, {"error": {"message": "overloaded", "type": "server_error"}})
                server.requests[-1]["ok"] = True
                n = len(server.requests)
                answer = f"Axial image region number {n} with soft tissue and fat, described in report style."
                return self._send(
                    200,
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                    },
                )

            def _send(self, code, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()  # stops within 50 ms

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("GTGM_TEST_KEY", KEY)
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def em_cache(corpus):
    return VolumeCache(corpus / "cache", group="em_synthetic")


def _cfg(url, **kw):
    base = dict(
        captioner="openai",
        model="test-vlm",
        base_url=url,
        api_key_env="GTGM_TEST_KEY",
        retries=2,
        backoff=0.01,
        timeout=5,
        concurrency=3,
        batch_size=4,
    )
    cfg = CaptionConfig(**{**base, **kw})
    cfg.patch_size["EM"] = cfg.step["EM"] = [64, 64, 16]  # 8 boxes per EM volume
    return cfg


def test_captions_and_request_format(server, em_cache, tmp_path, capsys):
    cfg = _cfg(server.url, prompt="Describe this {modality} slice.")
    stats = run_captioning(em_cache, create_captioner(cfg), tmp_path / "c.jsonl", cfg, progress=False)
    records = read_captions(tmp_path / "c.jsonl")
    assert stats["written"] == len(records) == len(server.requests) == 8  # 1 EM volume x 8 boxes
    assert all(r["captioner"] == "openai" and "report style" in r["text"] for r in records)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "test-vlm"
    assert body["messages"][0]["role"] == "system" and "EM" in body["messages"][0]["content"]
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "Describe this EM slice."}
    url = parts[1]["image_url"]["url"]
    assert parts[1]["type"] == "image_url" and url.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (64, 64)
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + (tmp_path / "c.jsonl").read_text()


def test_server_errors_after_retries_keep_written_captions(server, em_cache, tmp_path):
    server.fail_after = 6
    cfg = _cfg(server.url, concurrency=1, batch_size=2)
    with pytest.raises(GtgmError, match=r"request for patch em_\d+:.* failed after 3 tries"):
        run_captioning(em_cache, create_captioner(cfg), tmp_path / "c.jsonl", cfg, progress=False)
    kept = read_captions(tmp_path / "c.jsonl")
    assert len(kept) == 6  # everything answered before the failure is on disk, intact
    assert len(server.requests) == 6 + 3  # the failing request: first try + 2 retries
    server.fail_after = None
    stats = run_captioning(em_cache, create_captioner(cfg), tmp_path / "c.jsonl", cfg, progress=False)
    assert stats["skipped"] == 6 and len(read_captions(tmp_path / "c.jsonl")) == 8  # resumed


def test_server_down(em_cache, tmp_path, monkeypatch, capsys):
    srv = FakeServer()
    url = srv.url
    srv.close()  # nothing listens on that port any more
    (tmp_path / "c.jsonl").write_text(json.dumps({"key": "earlier", "text": "kept", "captioner": "openai"}) + "\n")
    code = main(
        [
            "caption",
            str(em_cache.root),
            "--out",
            str(tmp_path / "c.jsonl"),
            "--captioner",
            "openai",
            "--model",
            "m",
            "--base-url",
            url,
            "caption.retries=1",
            "caption.backoff=0.01",
            "caption.timeout=2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "failed after 2 tries" in err and "APIConnectionError" in err
    assert [r["key"] for r in read_captions(tmp_path / "c.jsonl")] == ["earlier"]


@pytest.mark.parametrize(
    "mode, match",
    [
        ("400", r"refused the request for patch em_000:0,0,0.*HTTP 400"),
        ("bad", r"malformed answer for patch em_000:0,0,0"),
    ],
)
def test_client_errors_and_malformed_answers_name_the_patch(server, em_cache, tmp_path, mode, match):
    server.mode = mode
    cfg = _cfg(server.url, concurrency=1, batch_size=1)
    with pytest.raises(GtgmError, match=match):
        run_captioning(em_cache, create_captioner(cfg), tmp_path / "c.jsonl", cfg, progress=False)
    assert len(server.requests) == 1  # not retried


def test_a_server_that_echoes_the_api_key_does_not_get_it_printed(server, em_cache, tmp_path, capsys):
    server.mode = "echo"
    cfg = _cfg(server.url, concurrency=1, batch_size=1)
    with pytest.raises(GtgmError) as info:
        run_captioning(em_cache, create_captioner(cfg), tmp_path / "c.jsonl", cfg, progress=False)
    assert "bad credentials" in str(info.value) and "[API key]" in str(info.value)
    assert KEY not in str(info.value) and KEY not in capsys.readouterr().err
    assert info.value.__cause__ is None and info.value.__suppress_context__  # not in a chained traceback either


def test_refine_rewrites_existing_captions(server, corpus, tmp_path):
    src = tmp_path / "describe.jsonl"
    src.write_text("".join(line for line in open(corpus / "captions.jsonl").readlines()[:5]))
    code = main(
        [
            "caption",
            "--refine",
            str(src),
            "--out",
            str(tmp_path / "refined.jsonl"),
            "--model",
            "llm",
            "--base-url",
            server.url,
            "caption.api_key_env=GTGM_TEST_KEY",
        ]
    )
    assert code == 0
    refined = read_captions(tmp_path / "refined.jsonl")
    original = read_captions(src)
    assert [r["key"] for r in refined] == [r["key"] for r in original]
    assert all(r["captioner"] == "openai-refine" and r["source_captioner"] == "describe" for r in refined)
    assert [r["source_text"] for r in refined] == [r["text"] for r in original]
    prompts = [r["body"]["messages"][0]["content"] for r in server.requests]  # concurrent: any order
    assert all(any(o["text"] in p for p in prompts) for o in original)
    assert all("radiology-report style" in p for p in prompts)
