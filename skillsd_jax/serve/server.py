"""The HTTP side: a Starlette app served by uvicorn, speaking the OpenAI API over our model.

Routes: `GET /health` (no auth), `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
(both with `stream: true` as server-sent events). Each request is read (size and time limits),
validated and tokenized (`protocol`, in a worker thread), and its token rows handed to the shared
`Batcher`; the event loop awaits the result, so hundreds of open connections cost no threads and
concurrent requests share sampler calls. Errors come back in OpenAI's JSON error shape; internal errors
are 500 with the traceback in the server log only. A full queue is 429 with Retry-After; more open
connections than `max_connections` get uvicorn's 503, never a reset.

`start_server` runs it in-process on a background thread (tests, notebooks, the CLI);
`ServerHandle.close()` stops accepting, lets running requests (streams included) finish, then stops
the batcher.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import json
import logging
import socket
import threading
import time
from typing import Any, Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from skillsd_jax.models.tokenizer import stop_ids
from skillsd_jax.sampling import Sampler
from skillsd_jax.sampling.params import MAX_STOP_TOKENS
from skillsd_jax.serve.batcher import Batcher, BatcherBusy, BatcherClosed
from skillsd_jax.serve.codec import TextCodec
from skillsd_jax.serve.protocol import (MAX_N, APIError, GenerationRequest, ServeLimits, build_response, models_body,
                                        parse_chat, parse_completion, response_id)
from skillsd_jax.serve.streaming import SSE_DONE, ChunkWriter, sse

log = logging.getLogger(__name__)

_DRAIN_LIMIT = 64 << 20  # a refused body up to this size is read and dropped, so the client gets our answer


class _ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class _App:
    """Routing, auth, body limits and the generate flow."""

    def __init__(self, codec: TextCodec, limits: ServeLimits, batcher: Batcher, *, api_key: str | None,
                 max_body_bytes: int, request_timeout_s: float, body_timeout_s: float):
        self.codec = codec
        self.limits = limits
        self.batcher = batcher
        self._key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.body_timeout_s = body_timeout_s
        self.created = int(time.time())
        routes = [Route("/health", self._endpoint(self.health), methods=["GET"]),
                  Route("/v1/models", self._endpoint(self.models), methods=["GET"]),
                  Route("/v1/chat/completions", self._endpoint(functools.partial(self.generate, parse_chat)),
                        methods=["POST"]),
                  Route("/v1/completions", self._endpoint(functools.partial(self.generate, parse_completion)),
                        methods=["POST"])]
        self.asgi = Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})

    # ------------------------------------------------------------------ plumbing

    def _endpoint(self, fn: Callable[[Request], Awaitable[tuple[Response, dict[str, Any]]]]
                  ) -> Callable[[Request], Awaitable[Response]]:
        """Wraps a handler: OpenAI-shaped errors, one log line per request (streams log when they end)."""

        async def run(request: Request) -> Response:
            t0 = time.monotonic()
            facts: dict[str, Any] = {}
            try:
                response, facts = await fn(request)
            except APIError as e:
                response, facts = _error_response(e), {"error": e.message[:160]}
            except _ClientGone:
                response, facts = Response(status_code=499), {"error": "client closed the connection"}
            except Exception:
                log.exception("internal error handling %s %s", request.method, request.url.path[:200])
                response = _error_response(APIError(500, "internal server error (see the server log)"))
            if not isinstance(response, StreamingResponse):  # a stream logs its own line when it ends
                _log_request(request, response.status_code, t0, facts)
            return response

        return run

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """The router's 404 / 405 in OpenAI's error shape."""
        status = getattr(exc, "status_code", 500)
        if status == 405:
            e = APIError(405, f"{request.url.path[:200]} does not accept {request.method}", code="method_not_allowed")
        elif status == 404:
            e = APIError(404, f"unknown route {request.method} {request.url.path[:200]}", code="not_found")
        else:
            e = APIError(status, str(getattr(exc, "detail", "")) or "HTTP error")
        _log_request(request, status, time.monotonic(), {"error": e.message[:160]})
        return _error_response(e)

    def _check_key(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("authorization", "").strip()
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode("utf-8"), self._key):
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    async def _read_json(self, request: Request) -> Any:
        """The body as JSON: at most `max_body_bytes`, fully arrived within `body_timeout_s`."""
        raw_len = request.headers.get("content-length")
        declared = None
        if raw_len is not None:
            try:
                declared = int(raw_len)
            except ValueError:
                raise APIError(400, "invalid Content-Length header") from None
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                if declared is not None and declared > self.max_body_bytes:
                    await _drain(request, declared)
                    raise _too_large(declared, self.max_body_bytes, declared > _DRAIN_LIMIT)
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await _drain(request, None)
                        raise _too_large(size, self.max_body_bytes, False)
                    chunks.append(chunk)
        except TimeoutError:
            raise APIError(408, f"the request body did not arrive within {self.body_timeout_s:.0f} s",
                           code="request_timeout", headers={"Connection": "close"}) from None
        except ClientDisconnect:
            raise _ClientGone() from None
        try:
            return json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None

    def _submit(self, req: GenerationRequest) -> concurrent.futures.Future:
        max_rows = max(self.batcher.max_batch, MAX_N)
        if len(req.rows) > max_rows:
            raise APIError(400, f"prompts x n = {len(req.rows)} completions; this server allows at most {max_rows} "
                                "per request", param="n")
        try:
            return self.batcher.submit(req.rows, max_new_tokens=req.max_tokens, sampling=req.sampling, seed=req.seed)
        except BatcherBusy as e:
            raise APIError(429, f"server busy: {e}; retry later", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        except BatcherClosed:
            raise APIError(503, "the server is shutting down", code="shutting_down") from None

    async def _result(self, future: concurrent.futures.Future, request: Request) -> list[Any]:
        """The batcher's completions; gives up (and withdraws a still-queued job) when the client leaves
        or `request_timeout_s` passes."""
        result = asyncio.wrap_future(future)
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            done, _ = await asyncio.wait({result, gone}, timeout=self.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if result not in done:
            result.cancel()  # cancels the batcher's job too unless it is already on the device
            if gone in done:
                raise _ClientGone()
            raise APIError(504, f"generation did not finish within {self.request_timeout_s:.0f} s", code="timeout")
        try:
            return result.result()
        except BatcherClosed:
            raise APIError(503, "the server shut down before this request ran", code="shutting_down") from None
        except Exception:  # the batcher logged the traceback; the client gets no internals
            raise APIError(500, "internal error while generating (see the server log)") from None

    # ------------------------------------------------------------------ routes

    async def health(self, request: Request) -> tuple[Response, dict[str, Any]]:
        return JSONResponse({"status": "ok"}), {}

    async def models(self, request: Request) -> tuple[Response, dict[str, Any]]:
        self._check_key(request)
        return JSONResponse(models_body(self.limits, self.created)), {}

    async def generate(self, parse: Callable[..., GenerationRequest], request: Request
                       ) -> tuple[Response, dict[str, Any]]:
        self._check_key(request)
        body = await self._read_json(request)
        req = await run_in_threadpool(parse, body, self.codec, self.limits)  # tokenizing is CPU work
        future = self._submit(req)
        facts: dict[str, Any] = {"rows": len(req.rows)}
        if req.stream:
            stream = self._stream(req, future, request, facts)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}), facts
        try:
            completions = await self._result(future, request)
        finally:
            future.cancel()  # a no-op once it ran
        out = await run_in_threadpool(build_response, req, completions, self.codec, self.limits.model_name)
        return JSONResponse(out), _facts(facts, req, out["usage"])

    async def _stream(self, req: GenerationRequest, future: concurrent.futures.Future, request: Request,
                      facts: dict[str, Any]):
        t0 = time.monotonic()
        writer = ChunkWriter(req, response_id(req), self.limits.model_name)
        status = 200
        try:
            for chunk in writer.opening():
                yield sse(chunk)
            try:
                completions = await self._result(future, request)
                chunks = await run_in_threadpool(writer.content, completions, self.codec)
            except APIError as e:  # headers are sent: the error travels as an event, as OpenAI does
                status, facts["error"] = e.status, e.message[:160]
                yield sse(e.body())
            except _ClientGone:
                raise
            except Exception:
                log.exception("internal error building a streamed answer")
                status, facts["error"] = 500, "internal error"
                yield sse(APIError(500, "internal error while streaming (see the server log)").body())
            else:
                facts.update(_facts({}, req, writer.usage))
                for chunk in chunks:
                    yield sse(chunk)
            yield SSE_DONE
        except _ClientGone:
            status, facts["error"] = 499, "client closed the connection"
        except asyncio.CancelledError:  # the response could not be sent: the client is gone
            status, facts["error"] = 499, "client closed the connection"
            raise
        finally:
            future.cancel()
            facts["stream"] = 1
            _log_request(request, status, t0, facts)


def _facts(facts: dict[str, Any], req: GenerationRequest, usage: dict[str, int]) -> dict[str, Any]:
    facts = {**facts, "prompt": usage["prompt_tokens"], "completion": usage["completion_tokens"]}
    if req.ignored_fields:
        facts["ignored"] = ",".join(f[:40] for f in req.ignored_fields[:10])
    return facts


def _log_request(request: Request, status: int, t0: float, facts: dict[str, Any]) -> None:
    extra = " ".join(f"{k}={v}" for k, v in facts.items())
    log.info("%s %s %d %.1fms %s", request.method, request.url.path[:100], status, 1e3 * (time.monotonic() - t0),
             extra)


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _too_large(size: int, limit: int, close: bool) -> APIError:
    return APIError(413, f"request body of {size} bytes exceeds the limit of {limit}", code="request_too_large",
                    headers={"Connection": "close"} if close else None)


async def _drain(request: Request, declared: int | None) -> None:
    """Reads and drops a refused body (up to `_DRAIN_LIMIT`): answering while the client still sends
    would make it see a reset instead of our 413."""
    if declared is not None and declared > _DRAIN_LIMIT:
        return
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > _DRAIN_LIMIT:
                return
    except (ClientDisconnect, RuntimeError):  # gone, or the stream was already consumed
        return


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ServerHandle:
    """A running server: `url` (e.g. "http://127.0.0.1:8000"), `port`, `stats()`, `close()`."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, app: _App, batcher: Batcher, host: str):
        self._server = server
        self._sock = sock
        self._app = app
        self.batcher = batcher
        self.port = int(sock.getsockname()[1])
        self.host = host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.url = f"http://{shown}:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                batcher.close(0)
                sock.close()
                raise RuntimeError(f"the HTTP server on {self.url} did not start (see the log)")
            time.sleep(0.01)

    @property
    def model_name(self) -> str:
        return self._app.limits.model_name

    def stats(self) -> dict[str, int]:
        return self.batcher.stats()

    def close(self, timeout: float = 30.0) -> None:
        """Graceful stop: refuse new connections, let running requests finish (up to `timeout`; then they
        are cancelled), stop the batcher, release the port."""
        if self._closed:
            return
        self._closed = True
        self._server.config.timeout_graceful_shutdown = timeout
        self._server.should_exit = True
        self._thread.join(timeout + 5)
        if self._thread.is_alive():
            log.warning("the HTTP server did not stop within %.0f s", timeout)
            self._server.force_exit = True
            self._thread.join(5)
        self.batcher.close(timeout)
        self._sock.close()
        log.info("server on %s closed", self.url)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(model: Any, tokenizer: Any, *, host: str = "127.0.0.1", port: int = 0,
                 served_model_name: str = "skillsd-jax", max_batch: int = 8, max_new_tokens_limit: int = 1024,
                 batch_window_s: float = 0.005, api_key: str | None = None, max_body_bytes: int = 4 << 20,
                 request_timeout_s: float = 600.0, body_timeout_s: float = 30.0, max_queued: int = 256,
                 max_connections: int = 2048, params_fn: Callable[[], Any] | None = None,
                 lock: Any = None) -> ServerHandle:
    """Serves `model` (a `Transformer`) with `tokenizer` on `host:port` (0: any free port) in the background.

    `params_fn` returns the parameters to generate with (default: the model's own, fixed), e.g. a
    trainer's current policy; `lock` is held around every sampler call (share it with other users of
    the device). `api_key`, when given, is required as a Bearer token on /v1 routes. `max_queued`
    requests may wait for the device (more get 429); `max_connections` connections may be open at once
    (more get 503).
    """
    context = int(model.config.max_position_embeddings)
    if max_new_tokens_limit < 1:
        raise ValueError(f"max_new_tokens_limit must be >= 1, got {max_new_tokens_limit}")
    if max_new_tokens_limit >= context:
        log.warning("max_new_tokens_limit %d lowered to %d: the model's context is %d tokens",
                    max_new_tokens_limit, context - 1, context)
        max_new_tokens_limit = context - 1
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}")
    if max_body_bytes < 1 or request_timeout_s <= 0 or body_timeout_s <= 0 or max_connections < 1:
        raise ValueError("start_server needs max_body_bytes >= 1, request_timeout_s > 0, body_timeout_s > 0 and "
                         "max_connections >= 1")
    stops = tuple(stop_ids(tokenizer))[:MAX_STOP_TOKENS]
    if not stops:
        log.warning("the tokenizer has no end-of-turn or EOS token: completions run to max_tokens")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sampler, params = Sampler.for_model(model)
    batcher = Batcher(sampler, params_fn or (lambda: params), max_batch=max_batch, window_s=batch_window_s, lock=lock,
                      max_pending=max_queued)
    limits = ServeLimits(model_name=served_model_name, context_len=context,
                         max_new_tokens_limit=int(max_new_tokens_limit), default_stop_ids=stops)
    app = _App(TextCodec(tokenizer), limits, batcher, api_key=api_key, max_body_bytes=int(max_body_bytes),
               request_timeout_s=float(request_timeout_s), body_timeout_s=float(body_timeout_s))
    config = uvicorn.Config(app.asgi, lifespan="off", log_config=None, access_log=False, server_header=False,
                            limit_concurrency=int(max_connections), backlog=max(2048, int(max_connections)),
                            timeout_keep_alive=30, timeout_graceful_shutdown=30)
    handle = ServerHandle(uvicorn.Server(config), sock, app, batcher, host)
    log.info("serving %r (context %d, max_batch %d, max_queued %d) on %s%s", served_model_name, context, max_batch,
             max_queued, handle.url, " with API key" if api_key else "")
    return handle
