"""A client for an OpenAI-compatible *completions* server (``POST {api_base}/completions``).

Meant for a ``vllm serve`` (or any server implementing the legacy completions API) started by the
user, e.g. one big model shared by many jobs. Tokenisation stays local: the tokenizer is loaded
from the model folder (:func:`plural_icm.backends.loading.resolve_model`) and prompts are sent as
lists of token ids, which the completions API accepts, so the server scores exactly the tokens the
transformers and in-process vLLM backends would.

Label scoring follows the label rule of :mod:`plural_icm.backends.base` with the same next-token
queries as the vLLM backend (:class:`~plural_icm.backends.scoring.ContinuationPlan`): each query
is ``max_tokens=1, temperature=0, logprobs=K`` plus two vLLM extensions that other servers ignore:
``logprob_token_ids`` (the label token ids: vLLM >= 0.2x then returns exactly those, whatever
their rank) and ``return_tokens_as_token_ids`` (keys ``"token_id:3635"``). A server that ignores
the latter names tokens by text, which is matched against the decoded label token. A label token
that is not among what the server returned (the top ``K`` on servers without
``logprob_token_ids``) raises :class:`LabelNotInTopKError`, never a silent 0; raise
``top_logprobs`` (and the server's ``--max-logprobs``) if that happens.

Failures: connection errors, timeouts, HTTP 408/409/429 and 5xx are retried at most
``max_retries`` times with exponential backoff; any other 4xx fails at once. A prompt longer than
the context is refused locally before sending (:class:`~plural_icm.backends.base.ContextLengthError`)
and an HTTP 400 that says so is turned into the same error, without retrying. The API key is read
from the environment variable named by ``api_key_env`` and is never logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from plural_icm.backends.base import (
    ContextLengthError,
    GenerationParams,
    LMBackend,
    Prompt,
    flatten,
    prompt_length,
)
from plural_icm.backends.settings import OpenAISettings
from plural_icm.backends.registry import register_backend
from plural_icm.backends.scoring import (
    DEFAULT_TOP_LOGPROBS,
    ContinuationPlan,
    LabelNotInTopKError,
    checked_label_ids,
)

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
_CONTEXT_RE = re.compile(
    r"context length|context window|maximum context|max_model_len|too long|maximum model length"
    r"|exceeds the max|longer than the maximum", re.I)


class BackendRequestError(RuntimeError):
    """A request to the server failed for good (non-retryable, or retries exhausted)."""


def _load_tokenizer(model_spec: str, cache_dir: Any, revision: str | None,
                    trust_remote_code: bool) -> Any:
    from plural_icm.backends.loading import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(model_spec, cache_dir, revision=revision,
                                        trust_remote_code=trust_remote_code))


@register_backend
class OpenAIBackend(LMBackend):
    """Label scoring and generation through ``/v1/completions`` with token-id prompts."""

    name = "openai"
    settings_class = OpenAISettings
    install = "pip install requests"
    served = True

    def __init__(self, model_spec: str, cache_dir: Any = None, revision: str | None = None,
                 max_context: int | None = None, trust_remote_code: bool = False,
                 api_base: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 batch_size: int = 8,
                 served_model: str | None = None, top_logprobs: int = DEFAULT_TOP_LOGPROBS,
                 timeout_s: float = 120.0, connect_timeout_s: float = 5.0, max_retries: int = 4,
                 backoff_s: float = 0.5, max_backoff_s: float = 20.0,
                 concurrency: int | None = None, tokenizer: Any = None,
                 send_token_ids: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """The keywords are :class:`~plural_icm.backends.settings.OpenAISettings`' fields, plus
        ``tokenizer`` and ``sleep`` (injected by tests)."""
        super().__init__()
        if not api_base:
            raise ValueError("backend=openai needs model.api_base, e.g. http://127.0.0.1:8000/v1")
        self.api_base = api_base.rstrip("/")
        self.model_id = model_spec
        self.revision = revision
        self.served_model = served_model
        self.api_key_env = api_key_env
        self.top_logprobs = int(top_logprobs)
        self.send_token_ids = bool(send_token_ids)
        self.timeout = (float(connect_timeout_s), float(timeout_s))
        self.max_retries = int(max_retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.concurrency = max(1, int(concurrency or batch_size or 1))
        self._sleep = sleep
        self._local = threading.local()
        self._stats_lock = threading.Lock()
        self._sessions: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self.tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(
            model_spec, cache_dir, revision, trust_remote_code)
        self._max_context_given = int(max_context) if max_context else 0
        self.max_context = self._max_context_given
        self._server_checked = False

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model_id!r}, api_base={self.api_base!r})"

    # -- HTTP ------------------------------------------------------------------------------------
    def _session(self) -> Any:
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
            if key:
                s.headers["Authorization"] = f"Bearer {key}"
            self._local.session = s
            with self._stats_lock:
                self._sessions.append(s)
        return s

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One call with bounded retries; returns the decoded JSON body."""
        import requests

        url = f"{self.api_base}{path}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                log.warning("%s %s: %s; retry %d/%d in %.1fs", method, url, last, attempt,
                            self.max_retries, delay)
                self._sleep(delay)
            try:
                r = self._session().request(method, url, json=payload, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    last = f"HTTP 200 with a body that is not JSON: {r.text[:200]!r}"
                    continue
            body = r.text[:1000]
            if r.status_code in RETRYABLE_STATUS:
                last = f"HTTP {r.status_code}: {body[:200]}"
                continue
            if r.status_code == 400 and _CONTEXT_RE.search(body):
                raise ContextLengthError(
                    f"{self.api_base} refused a prompt as longer than the context of "
                    f"{self.served_model or self.model_id}: {body}")
            raise BackendRequestError(f"{method} {url} failed with HTTP {r.status_code} "
                                      f"(not retried): {body}")
        raise BackendRequestError(f"{method} {url} failed after {self.max_retries + 1} attempts: "
                                  f"{last}")

    def _check_server(self) -> None:
        """Learn the served model name and its context from ``/models`` (once)."""
        if self._server_checked:
            return
        data = self._request("GET", "/models").get("data") or []
        if self.served_model is None:
            ids = [m.get("id") for m in data]
            if len(ids) == 1:
                self.served_model = ids[0]
            elif self.model_id in ids:
                self.served_model = self.model_id
            else:
                raise BackendRequestError(
                    f"{self.api_base} serves {ids}; say which with served_model=")
        for m in data:
            if m.get("id") == self.served_model and m.get("max_model_len"):
                server_len = int(m["max_model_len"])
                self.max_context = (min(self._max_context_given, server_len)
                                    if self._max_context_given else server_len)
        self._server_checked = True

    def _complete(self, token_ids: list[int], **params: Any) -> dict:
        payload = {"model": self.served_model, "prompt": token_ids, **params}
        out = self._request("POST", "/completions", payload)
        usage = out.get("usage") or {}
        n = int(usage.get("prompt_tokens", len(token_ids)) or 0)
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        with self._stats_lock:
            self.stats.prompt_tokens_cached += cached
            self.stats.prompt_tokens_computed += n - cached
            self.stats.generated_tokens += int(usage.get("completion_tokens", 0) or 0)
        return out

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                            thread_name_prefix="openai-backend")
        return list(self._pool.map(fn, items))

    # -- label scoring ---------------------------------------------------------------------------
    def _parse_top(self, top: dict[str, float], wanted: set[int]) -> dict[int, float]:
        got: dict[int, float] = {}
        by_text: dict[str, float] = {}
        for key, lp in top.items():
            if key.startswith("token_id:"):
                try:
                    got[int(key[9:])] = float(lp)
                    continue
                except ValueError:
                    pass
            by_text[key] = float(lp)
        for t in wanted:
            if t not in got:
                text = self.tokenizer.decode([t])
                if text in by_text:
                    got[t] = by_text[text]
        return got

    def _query(self, item: tuple[list[int], set[int]]) -> dict[int, float]:
        tokens, wanted = item
        extra: dict[str, Any] = {"return_tokens_as_token_ids": True}
        if self.send_token_ids and len(wanted) <= 128:
            extra["logprob_token_ids"] = sorted(wanted)
        out = self._complete(tokens, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs,
                             **extra)
        choice = (out.get("choices") or [{}])[0]
        lps = choice.get("logprobs") or {}
        tops = lps.get("top_logprobs") or [{}]
        top = dict(tops[0] or {})
        # the sampled token is always known, even when it is not in the top-K dict
        toks, tlps = lps.get("tokens") or [], lps.get("token_logprobs") or []
        if toks and tlps and tlps[0] is not None:
            top.setdefault(toks[0], tlps[0])
        got = self._parse_top(top, wanted)
        missing = wanted - set(got)
        if missing:
            names = {t: self.tokenizer.decode([t]) for t in sorted(missing)}
            raise LabelNotInTopKError(
                f"label token(s) {names} not among the top {self.top_logprobs} next tokens the "
                f"server returned after a prompt of {len(tokens)} tokens; raise top_logprobs "
                "(and the server's --max-logprobs) or use the vllm/hf backend")
        return got

    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        label_ids = checked_label_ids(self, prompts, labels)  # before any request: fail at once
        longest = max(len(t) for t in label_ids)
        if not prompts:
            return np.zeros((0, len(labels)))
        with self.timed():
            self._check_server()
            for i, p in enumerate(prompts):  # the server may have a shorter context
                self.check_length(p, what=f"prompt {i}", extra=longest)
            plan = ContinuationPlan(prompts, label_ids)
            answers = self._map(self._query, list(zip(plan.queries, plan.wanted)))
            self.stats.prompts += len(prompts)
            return plan.assemble(answers)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        for i, p in enumerate(prompts):
            self.check_length(p, what=f"prompt {i}", extra=1)
        if not prompts:
            return []
        with self.timed():
            self._check_server()

            def one(p: Prompt) -> str:
                self.check_length(p, extra=1)
                room = (self.max_context - prompt_length(p)) if self.max_context else params.max_new_tokens
                body: dict[str, Any] = dict(max_tokens=max(1, min(params.max_new_tokens, room)),
                                            temperature=params.temperature, top_p=params.top_p)
                if params.seed is not None:
                    body["seed"] = params.seed
                if params.stop:
                    body["stop"] = list(params.stop)
                out = self._complete(flatten(p), **body)
                return (out.get("choices") or [{}])[0].get("text", "")

            texts = self._map(one, list(prompts))
            self.stats.prompts += len(prompts)
            return texts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._stats_lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()
        self._local = threading.local()


__all__ = ["OpenAIBackend", "BackendRequestError", "LabelNotInTopKError"]
