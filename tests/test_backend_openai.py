"""The OpenAI-compatible completions client.

Part 1 (runs everywhere, milliseconds): retry, timeout, context and key handling against a tiny
local HTTP server written here with ``http.server``.
Part 2 (``@pytest.mark.vllm``): a real ``vllm.entrypoints.openai.api_server`` on the packaged
SmolLM2 folder, compared with the transformers backend.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from plural_icm.backends.base import ContextLengthError, GenerationParams, as_prompt
from plural_icm.backends.openai_backend import (
    BackendRequestError,
    LabelNotInTopKError,
    OpenAIBackend,
)

# -------------------------------------------------------------------------------------------
# Part 1: a fake server
# -------------------------------------------------------------------------------------------
VOCAB = {" True": [5], " False": [6], " Maybe so": [7, 8]}
TEXT = {1: "<s>", 5: " True", 6: " False", 7: " Maybe", 8: " so", 9: " x"}


class FakeTokenizer:
    bos_token_id = 1
    chat_template = None

    def encode(self, text, add_special_tokens=False):
        return list(VOCAB[text])

    def decode(self, ids):
        return "".join(TEXT.get(i, f"<{i}>") for i in ids)


def fake_logprobs(prompt: list[int]) -> dict[int, float]:
    """A deterministic next-token distribution over ids 5..9 that depends on the prompt."""
    s = sum(prompt) + len(prompt)
    logits = np.array([(s * (k + 3)) % 7 for k in range(5)], dtype=float)
    lp = logits - np.log(np.exp(logits).sum())
    return {5 + k: float(lp[k]) for k in range(5)}


class FakeServer:
    def __init__(self):
        self.mode = "ok"
        self.fail_first = 0
        self.delay = 0.0
        self.token_id_keys = True
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.top_k_cap = 5
        self.honor_token_ids = False
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left (the timeout test)

            def do_GET(self):
                outer.headers.append(dict(self.headers))
                self._send(200, {"data": [{"id": "fake-model", "max_model_len": 64}]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n))
                outer.requests.append(req)
                outer.headers.append(dict(self.headers))
                if outer.delay:
                    time.sleep(outer.delay)
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    return self._send(503, {"error": "busy"})
                if outer.mode == "503":
                    return self._send(503, {"error": "busy"})
                if outer.mode == "context":
                    return self._send(400, {"object": "error", "message":
                                            "This model's maximum context length is 64 tokens. "
                                            "However, you requested 99 tokens."})
                if outer.mode == "bad":
                    return self._send(400, {"message": "unknown parameter"})
                prompt = req["prompt"]
                lps = fake_logprobs(prompt)
                top = sorted(lps.items(), key=lambda kv: -kv[1])[: min(req.get("logprobs") or 0,
                                                                        outer.top_k_cap)]
                if outer.honor_token_ids and req.get("logprob_token_ids"):
                    top = [(t, lps[t]) for t in req["logprob_token_ids"]]
                key = (lambda t: f"token_id:{t}") if outer.token_id_keys else (lambda t: TEXT[t])
                best = top[0][0] if top else 5
                self._send(200, {
                    "choices": [{"text": TEXT[best], "logprobs": {
                        "tokens": [key(best)], "token_logprobs": [lps[best]],
                        "top_logprobs": [{key(t): v for t, v in top}]}}],
                    "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1,
                              "prompt_tokens_details": {"cached_tokens": len(prompt) // 2}},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def client(url, **kw):
    kw.setdefault("tokenizer", FakeTokenizer())
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("top_logprobs", 5)
    return OpenAIBackend("fake", api_base=url, **kw)


P1 = as_prompt([1], [9, 9, 9])
P2 = as_prompt([1], [9, 9, 9], [5, 6])


def test_label_logprobs_and_multi_token_labels(server):
    be = client(server.url)
    out = be.label_logprobs([P1, P2], [" True", " False", " Maybe so"])
    for i, p in enumerate([[1, 9, 9, 9], [1, 9, 9, 9, 5, 6]]):
        lp = fake_logprobs(p)
        assert out[i, 0] == pytest.approx(lp[5])
        assert out[i, 1] == pytest.approx(lp[6])
        assert out[i, 2] == pytest.approx(lp[7] + fake_logprobs(p + [7])[8])
    # one query per prompt for the first token (shared by all labels) + one for " so"
    assert len(server.requests) == 4
    assert all(r["max_tokens"] == 1 and r["temperature"] == 0 for r in server.requests)
    assert all(isinstance(t, int) for r in server.requests for t in r["prompt"])
    assert be.stats.prompts == 2
    assert be.stats.prompt_tokens_cached == sum(len(r["prompt"]) // 2 for r in server.requests)
    assert be.served_model == "fake-model" and be.max_context == 64


def test_text_keyed_logprobs(server):
    server.token_id_keys = False
    out = client(server.url).label_logprobs([P1], [" True", " False"])
    lp = fake_logprobs([1, 9, 9, 9])
    assert out[0].tolist() == pytest.approx([lp[5], lp[6]])


def test_label_outside_top_k_is_an_error(server):
    server.top_k_cap = 1
    with pytest.raises(LabelNotInTopKError, match="top 5"):
        client(server.url).label_logprobs([P1], [" True", " False"])


def test_logprob_token_ids_requested(server):
    """vLLM >= 0.2x returns exactly the asked ids, so top-K no longer limits the labels."""
    server.top_k_cap = 1
    server.honor_token_ids = True
    out = client(server.url).label_logprobs([P1], [" True", " False"])
    assert server.requests[0]["logprob_token_ids"] == [5, 6]
    lp = fake_logprobs([1, 9, 9, 9])
    assert out[0].tolist() == pytest.approx([lp[5], lp[6]])


def test_too_long_prompt_fails_locally_before_any_request(server):
    be = client(server.url, max_context=16)
    long = as_prompt([1], [9] * 20)
    with pytest.raises(ContextLengthError, match="context of 16"):
        be.label_logprobs([P1, long], [" True", " False"])
    assert server.requests == []


def test_server_context_limit_learned_from_models(server):
    be = client(server.url)  # no max_context given: the server says 64
    with pytest.raises(ContextLengthError):
        be.label_logprobs([as_prompt([1], [9] * 70)], [" True"])
    assert server.requests == []  # only GET /models


def test_http_400_context_error_is_not_retried(server):
    server.mode = "context"
    be = client(server.url, max_retries=5)
    t0 = time.perf_counter()
    with pytest.raises(ContextLengthError, match="maximum context length"):
        be.label_logprobs([P1], [" True"])
    assert len(server.requests) == 1
    assert time.perf_counter() - t0 < 2


def test_other_400_is_not_retried(server):
    server.mode = "bad"
    with pytest.raises(BackendRequestError, match="HTTP 400 .not retried"):
        client(server.url, max_retries=5).label_logprobs([P1], [" True"])
    assert len(server.requests) == 1


def test_transient_errors_are_retried_with_backoff(server):
    server.fail_first = 2
    sleeps = []
    be = client(server.url, max_retries=3, backoff_s=0.5, sleep=sleeps.append)
    be.label_logprobs([P1], [" True"])
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_retries_are_bounded(server):
    server.mode = "503"
    sleeps = []
    be = client(server.url, max_retries=3, backoff_s=1.0, max_backoff_s=3.0, sleep=sleeps.append)
    with pytest.raises(BackendRequestError, match="after 4 attempts.*HTTP 503"):
        be.label_logprobs([P1], [" True"])
    assert len(server.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]


def test_read_timeout_is_retried_then_gives_up(server):
    server.delay = 0.5
    be = client(server.url, timeout_s=0.1, max_retries=1)
    be._check_server()  # GET /models is not delayed
    t0 = time.perf_counter()
    with pytest.raises(BackendRequestError, match="after 2 attempts.*Timeout"):
        be.label_logprobs([P1], [" True"])
    assert time.perf_counter() - t0 < 2
    assert len(server.requests) == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_closed_port_gives_up_after_n_tries():
    sleeps = []
    be = client(f"http://127.0.0.1:{_free_port()}/v1", max_retries=2, sleep=sleeps.append)
    with pytest.raises(BackendRequestError, match="after 3 attempts.*ConnectionError"):
        be.label_logprobs([P1], [" True"])
    assert len(sleeps) == 2


def test_api_key_sent_but_never_shown(server, monkeypatch):
    monkeypatch.setenv("MY_SECRET_KEY_VAR", "sk-very-secret")
    server.mode = "bad"
    be = client(server.url, api_key_env="MY_SECRET_KEY_VAR", max_retries=0)
    with pytest.raises(BackendRequestError) as e:
        be.label_logprobs([P1], [" True"])
    assert server.headers[-1]["Authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in str(e.value) + repr(be) + str(vars(be))


def test_generate_params_and_concurrency(server):
    be = client(server.url, concurrency=4)
    prompts = [as_prompt([1], [9] * k) for k in range(1, 9)]
    texts = be.generate(prompts, GenerationParams(max_new_tokens=5, temperature=0.7, top_p=0.9,
                                                  seed=3, stop=("\n",)))
    assert len(texts) == 8 and all(isinstance(t, str) for t in texts)
    posts = server.requests
    assert sorted(len(r["prompt"]) for r in posts) == [k + 1 for k in range(1, 9)]
    r = posts[0]
    assert (r["max_tokens"], r["temperature"], r["top_p"], r["seed"], r["stop"]) == (5, 0.7, 0.9, 3, ["\n"])
    assert be.stats.generated_tokens == 8
    be.close()


def test_requires_api_base():
    with pytest.raises(ValueError, match="api_base"):
        OpenAIBackend("fake", tokenizer=FakeTokenizer())


# -------------------------------------------------------------------------------------------
# Part 2: a real vLLM server
# -------------------------------------------------------------------------------------------
from test_backend_vllm import (  # noqa: E402  (tests/ is on sys.path via conftest.py)
    TOL,
    cpu_env,
    hf_reference,
    make_prompts,
    needs_vllm,
    require_vllm,
    smollm2_folder,
)

SERVER_START_TIMEOUT_S = float(os.environ.get("PLURAL_ICM_VLLM_SERVER_TIMEOUT", "300"))


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    import requests

    require_vllm()
    folder = smollm2_folder()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    env = {**os.environ, **cpu_env()}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server runs in its own process
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "2048", "--enforce-eager", "--enable-prefix-caching",
           "--max-logprobs", "50", "--served-model-name", "smollm2",
           "--enable-prompt-tokens-details"]
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n"
                            + Path(log_path).read_text()[-3000:])
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() - t0 > SERVER_START_TIMEOUT_S:
                pytest.fail(f"vLLM server not healthy after {SERVER_START_TIMEOUT_S}s:\n"
                            + Path(log_path).read_text()[-3000:])
            time.sleep(1)
        yield {"url": base + "/v1", "folder": folder, "startup_s": time.time() - t0}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.vllm
@needs_vllm
def test_real_server_matches_hf(vllm_server):
    be = OpenAIBackend("packaged:smollm2", api_base=vllm_server["url"], top_logprobs=5,
                       tokenizer=_tokenizer(vllm_server["folder"]), max_retries=1)
    prompts = make_prompts(be.tokenizer)
    labels = [" True", " False", " Absolutely not"]  # the last: two tokens
    got = be.label_logprobs(prompts, labels)
    ref = hf_reference(prompts, labels)
    diff = float(np.abs(got - ref).max())
    print(f"openai(vLLM server) vs hf: max |diff| = {diff:.2e}")
    assert diff < TOL
    assert be.served_model == "smollm2" and be.max_context == 2048
    # shared prefixes are served from the server's prefix cache
    assert be.stats.prompt_tokens_cached > 0
    texts = be.generate(prompts[:2], GenerationParams(max_new_tokens=4))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.vllm
@needs_vllm
def test_real_server_too_long_prompt_fails_at_once(vllm_server):
    tok = _tokenizer(vllm_server["folder"])
    long = as_prompt([tok.bos_token_id or 1], [tok.encode(" hello")[0]] * 3000)
    # no local limit: the server's 2048 is learned from /models and checked before sending
    be = OpenAIBackend("packaged:smollm2", api_base=vllm_server["url"], tokenizer=tok,
                       max_retries=5, backoff_s=2.0)
    t0 = time.perf_counter()
    with pytest.raises(ContextLengthError):
        be.label_logprobs([long], [" True"])
    assert time.perf_counter() - t0 < 2.0
    # a client that believes the context is larger sends it: the server's HTTP 400 is not retried
    be._server_checked, be.served_model, be.max_context = True, "smollm2", 100_000
    t0 = time.perf_counter()
    with pytest.raises(ContextLengthError, match="context"):
        be.label_logprobs([long], [" True"])
    assert time.perf_counter() - t0 < 5.0  # a retry would have slept >= 2 s
