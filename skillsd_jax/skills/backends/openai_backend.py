"""Summarizer over any OpenAI-compatible `/v1/chat/completions` endpoint (our server, vLLM, SGLang, hosted APIs).

HTTP goes through the official `openai` SDK's async client: its timeouts, its retries (connection
errors, timeouts, 408/409/429/5xx, with exponential backoff and the server's Retry-After) and its
error types. The groups of one `summarize` call are asked concurrently (at most `max_concurrency` at
a time). The reply body is read raw and checked here as strictly as before (the SDK would accept a
reply with missing fields), so a malformed response is counted as `bad_response`, not parsed into
an empty skill.

The API key is read from an environment variable whose NAME is configurable; its value is never
logged, never put in an error message and never shown by repr. With no key set, requests carry no
Authorization header (the SDK does not fall back to $OPENAI_API_KEY). A failed request is counted,
logged, and yields no skill; `summarize` never raises.

Counters (`stats()`): http_requests (attempts), retries, timeouts, connection_errors, http_429,
http_5xx, http_4xx, bad_response, failed_requests, plus the shared ones of `LLMSummarizer`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import urllib.parse
from typing import Any, Callable, Coroutine, Sequence

import httpx2
import openai

from skillsd_jax.skills.backends.llm import LLMSummarizer

log = logging.getLogger(__name__)


class OpenAISummarizer(LLMSummarizer):
    """Chat-completions client; `base_url` like "http://localhost:8000/v1" (the full endpoint URL also works)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 3, max_concurrency: int = 8, temperature: float = 0.3, max_tokens: int = 1024,
                 extra_body: dict[str, Any] | None = None, **llm_kwargs: Any):
        super().__init__(**llm_kwargs)
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"OpenAISummarizer base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0 or max_retries < 0 or max_concurrency < 1:
            raise ValueError("OpenAISummarizer needs timeout_s > 0, max_retries >= 0, max_concurrency >= 1")
        url = base_url.rstrip("/")
        self.base_url = url.removesuffix("/chat/completions")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_concurrency = int(max_concurrency)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.extra_body = dict(extra_body or {})
        self._key = _Secret(os.environ.get(api_key_env) or "")
        if not self._key.value:
            log.info("openai summarizer: $%s is not set; requests carry no Authorization header", api_key_env)

    def __repr__(self) -> str:
        return (f"OpenAISummarizer(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"api_key={'<set>' if self._key.value else '<unset>'})")

    @property
    def model_name(self) -> str:
        return self.model

    def _redact(self, text: str) -> str:
        return text.replace(self._key.value, "<redacted>") if self._key.value else text

    # ------------------------------------------------------------------ requests

    def _complete_batch(self, prompts: Sequence[Any]) -> list[str | None]:
        return _run(lambda: self._ask_all(list(prompts)))

    async def _ask_all(self, prompts: list[Any]) -> list[str | None]:
        # One client (connection pool) per batch: an SDK client is bound to the event loop it first ran on.
        transport = _CountingTransport(httpx2.AsyncHTTPTransport(), self._count)
        # Without a key the SDK still wants one: a placeholder that the omitted header keeps off the wire.
        client = openai.AsyncOpenAI(api_key=self._key.value or "no-key", base_url=self.base_url, timeout=self.timeout_s,
                                    max_retries=self.max_retries,
                                    http_client=openai.DefaultAsyncHttpxClient(transport=transport))
        gate = asyncio.Semaphore(self.max_concurrency)
        try:
            return list(await asyncio.gather(*(self._ask(client, gate, p) for p in prompts)))
        finally:
            await client.close()

    async def _ask(self, client: openai.AsyncOpenAI, gate: asyncio.Semaphore, messages: list[dict[str, str]]
                   ) -> str | None:
        async with gate:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens,
                    extra_body=self.extra_body or None,
                    extra_headers=None if self._key.value else {"Authorization": openai.Omit()})
                body = raw.http_response.content
            except openai.APIStatusError as e:
                detail = self._redact(_snippet(e))
                if e.status_code in (408, 409, 429) or e.status_code >= 500:  # what the SDK retries
                    return self._gave_up(f"HTTP {e.status_code}: {detail}")
                self._count("http_4xx")
                log.warning("openai summarizer: %s answered HTTP %d (not retried): %s", self.url, e.status_code,
                            detail)
                return None
            except openai.APITimeoutError:
                return self._gave_up(f"timeout after {self.timeout_s:g} s")
            except openai.APIConnectionError as e:
                return self._gave_up(f"connection error: {self._redact(str(e.__cause__ or e))[:200]}")
        return self._reply_text(body)

    def _gave_up(self, problem: str) -> None:
        self._count("failed_requests")
        log.warning("openai summarizer: request to %s failed after %d attempt(s): %s", self.url,
                    self.max_retries + 1, problem)
        return None

    def _reply_text(self, raw: bytes) -> str | None:
        """The assistant message text of a chat-completions response; None (counted) if malformed."""
        try:
            data = json.loads(raw.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            self._count("bad_response")
            log.warning("openai summarizer: malformed chat-completions response from %s (%s: %s; %d bytes)",
                        self.url, type(e).__name__, self._redact(str(e))[:120], len(raw))
            return None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            self._count("bad_response")
            log.warning("openai summarizer: response from %s has no text content", self.url)
            return None
        return content


class _CountingTransport(httpx2.AsyncBaseTransport):
    """Counts every HTTP attempt the SDK makes (its retries included) and how each one ended."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, count: Callable[[str], None]):
        self.inner = inner
        self.count = count

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.count("http_requests")
        if request.headers.get("x-stainless-retry-count", "0") != "0":  # the SDK numbers its attempts
            self.count("retries")
            log.info("openai summarizer: retry %s of %s", request.headers["x-stainless-retry-count"], request.url)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.TimeoutException:
            self.count("timeouts")
            raise
        except httpx2.TransportError:
            self.count("connection_errors")
            raise
        if response.status_code == 429:
            self.count("http_429")
        elif response.status_code >= 500:
            self.count("http_5xx")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Runs a coroutine to completion from synchronous code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _snippet(e: openai.APIStatusError) -> str:
    try:
        return e.response.text[:300].strip()
    except Exception:  # the error body is only for the log line
        return ""


class _Secret:
    """Holds the API key; its repr and str never show it (e.g. in vars() dumps or debuggers)."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__
