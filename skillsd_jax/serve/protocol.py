"""OpenAI wire format: request validation into `GenerationRequest`, response and error bodies.

Supported: `/v1/chat/completions` and `/v1/completions` with `max_tokens` / `max_completion_tokens`,
`temperature`, `top_p`, `n` (1..8), `stop` (up to 4 strings), `seed`, `logprobs` (the sampled tokens'
log-probs; no top alternatives), and the vLLM-style extensions `top_k`, `stop_token_ids`, `ignore_eos`,
`return_tokens_as_token_ids`, and `stream` with `stream_options.include_usage` (the chunks themselves are
built in `streaming`). Fields that would change the output in ways we do not implement (tools,
penalties, logit_bias, JSON mode, ...) are rejected with 400 naming the field, never silently ignored;
other unknown fields are ignored (and listed in the server log), as vLLM does.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from typing import Any, Sequence

from skillsd_jax.sampling import Completion, SamplingParams
from skillsd_jax.sampling.params import MAX_STOP_SEQUENCE_LEN, MAX_STOP_SEQUENCES, MAX_STOP_TOKENS
from skillsd_jax.serve.codec import TextCodec

MAX_N = 8
_VERY_UNLIKELY = -9999.0  # OpenAI's stand-in for a log-prob of -inf
MAX_PROMPTS = 16  # prompts per /v1/completions request
CHAT_ROLES = ("system", "user", "assistant", "tool")
# Fields clients send that do not change what we generate.
_HARMLESS = frozenset({"model", "user", "metadata", "store", "service_tier", "stream_options",
                       "parallel_tool_calls", "stream"})
# name -> value that means "feature off"; anything else is a 400.
_UNSUPPORTED_UNLESS = {
    "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none", "auto"), "function_call": (None, "none"),
    "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "audio": (None,), "prediction": (None,), "min_tokens": (None, 0),
}


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})  # e.g. Retry-After on 429
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What the served model and the operator allow."""

    model_name: str
    context_len: int  # max_position_embeddings: prompt + completion tokens
    max_new_tokens_limit: int
    default_stop_ids: tuple[int, ...]


@dataclasses.dataclass
class GenerationRequest:
    """A validated request: token-id prompts and everything the batcher and the response need."""

    kind: str  # "chat" | "completion"
    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: SamplingParams
    seed: int | None
    stop: tuple[str, ...]
    logprobs: bool
    token_ids_as_text: bool
    ignored_fields: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # streamed: end with a chunk that carries `usage`

    @property
    def rows(self) -> list[list[int]]:
        """One sampler row per choice: each prompt repeated `n` times."""
        return [p for p in self.prompts for _ in range(self.n)]


# ---------------------------------------------------------------------------- requests


def parse_chat(body: Any, codec: TextCodec, limits: ServeLimits) -> GenerationRequest:
    """Validates a chat-completions body and applies the chat template."""
    body = _common_checks(body, limits)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    clean = [_message(m, i) for i, m in enumerate(messages)]
    if not codec.has_chat_template:
        raise APIError(400, "the served tokenizer has no chat template; use /v1/completions", param="messages")
    try:
        prompt = codec.encode_chat(clean)
    except Exception as e:  # jinja errors (e.g. the template's raise_exception on a role order)
        raise APIError(400, f"the chat template rejected these messages: {type(e).__name__}: {e}",
                       param="messages") from None
    if not prompt:
        raise APIError(400, "the chat template rendered these messages to no tokens", param="messages")
    logprobs = _bool(body, "logprobs")
    return _finish(body, "chat", [prompt], logprobs, codec, limits)


def parse_completion(body: Any, codec: TextCodec, limits: ServeLimits) -> GenerationRequest:
    """Validates a (legacy) completions body: `prompt` is a string, a list of strings, token ids, or lists of ids."""
    body = _common_checks(body, limits)
    prompts = _prompts(body.get("prompt"), codec)
    lp = body.get("logprobs")
    if not (lp is None or isinstance(lp, bool) or (_is_int(lp) and lp == 0)):
        raise APIError(400, "'logprobs' must be 0 or true (the sampled tokens' log-probs); top alternatives are "
                            "not supported", param="logprobs")
    return _finish(body, "completion", prompts, lp is True or (_is_int(lp) and lp == 0), codec, limits)


def _common_checks(body: Any, limits: ServeLimits) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise APIError(400, "'stream_options' is only allowed with stream=true", param="stream_options")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise APIError(400, "'stream_options' must be an object like {'include_usage': true}",
                           param="stream_options")
    model = body.get("model")
    if model is not None and model != limits.model_name:
        raise APIError(404, f"the model {str(model)[:100]!r} does not exist; this server serves "
                            f"{limits.model_name!r}", param="model", code="model_not_found")
    for name, off in _UNSUPPORTED_UNLESS.items():
        if name in body and not _is_off(body[name], off):
            raise APIError(400, f"'{name}' is not supported by this server", param=name)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise APIError(400, "only response_format {'type': 'text'} is supported", param="response_format")
    best_of = body.get("best_of")
    if best_of is not None and best_of != body.get("n", 1):
        raise APIError(400, "'best_of' is not supported (use n)", param="best_of")
    return body


def _message(m: Any, i: int) -> dict[str, str]:
    if not isinstance(m, dict):
        raise APIError(400, f"messages[{i}] must be an object", param=f"messages[{i}]")
    role = m.get("role")
    role = "system" if role == "developer" else role
    if role not in CHAT_ROLES:
        raise APIError(400, f"messages[{i}].role must be one of {CHAT_ROLES + ('developer',)}, got {role!r}",
                       param=f"messages[{i}].role")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is understood
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"messages[{i}].content: only text parts are supported",
                               param=f"messages[{i}].content")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string or a list of text parts",
                       param=f"messages[{i}].content")
    if m.get("tool_calls"):
        raise APIError(400, "tool calls are not supported", param=f"messages[{i}].tool_calls")
    return {"role": role, "content": content}


def _prompts(prompt: Any, codec: TextCodec) -> list[list[int]]:
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise APIError(400, "'prompt' must be a string, a list of strings, or (lists of) token ids", param="prompt")
    if len(items) > MAX_PROMPTS:
        raise APIError(400, f"at most {MAX_PROMPTS} prompts per request, got {len(items)}", param="prompt")
    out = []
    for item in items:
        if isinstance(item, str):
            ids = codec.encode(item, add_special_tokens=True)
        elif isinstance(item, list) and all(_is_int(t) for t in item):
            ids = [int(t) for t in item]
            if any(t < 0 or t >= codec.vocab_size for t in ids):
                raise APIError(400, f"prompt token ids must be in [0, {codec.vocab_size})", param="prompt")
        else:
            raise APIError(400, "'prompt' must be a string, a list of strings, or (lists of) token ids",
                           param="prompt")
        if not ids:
            raise APIError(400, "a prompt encodes to no tokens", param="prompt")
        out.append(ids)
    return out


def _finish(body: dict[str, Any], kind: str, prompts: list[list[int]], logprobs: bool, codec: TextCodec,
            limits: ServeLimits) -> GenerationRequest:
    """The fields both endpoints share: lengths, sampling settings, stops, seed."""
    n = _int(body, "n", 1, lo=1, hi=MAX_N)
    longest = max(len(p) for p in prompts)
    ctx = limits.context_len
    if longest >= ctx:
        raise APIError(400, f"this model's maximum context length is {ctx} tokens, but the prompt has {longest}",
                       param="messages" if kind == "chat" else "prompt", code="context_length_exceeded")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, key, None, lo=1, hi=limits.max_new_tokens_limit)
    if max_tokens is None:
        max_tokens = min(limits.max_new_tokens_limit, ctx - longest)
    elif longest + max_tokens > ctx:
        raise APIError(400, f"this model's maximum context length is {ctx} tokens; you requested {longest + max_tokens}"
                            f" ({longest} in the prompt, {max_tokens} for the completion)", param=key,
                       code="context_length_exceeded")
    temperature = _num(body, "temperature", 1.0, lo=0.0)
    top_p = _num(body, "top_p", 1.0, lo=0.0, hi=1.0)
    if top_p == 0.0:
        raise APIError(400, "'top_p' must be in (0, 1]", param="top_p")
    top_k = _int(body, "top_k", 0, lo=-1, hi=codec.vocab_size)
    stop = _stops(body.get("stop"))
    stop_ids = [] if _bool(body, "ignore_eos") else list(limits.default_stop_ids)
    extra = body.get("stop_token_ids") or []
    if not isinstance(extra, list) or not all(_is_int(t) and 0 <= t < codec.vocab_size for t in extra):
        raise APIError(400, f"'stop_token_ids' must be a list of token ids in [0, {codec.vocab_size})",
                       param="stop_token_ids")
    stop_ids += [int(t) for t in extra if int(t) not in stop_ids]
    if len(stop_ids) > MAX_STOP_TOKENS:
        raise APIError(400, f"at most {MAX_STOP_TOKENS} stop token ids in all", param="stop_token_ids")
    # Stop strings become token sequences so generation ends early; longer ones are matched on text only.
    seqs = [ids for ids in (tuple(codec.encode(s, add_special_tokens=False)) for s in stop)
            if 1 <= len(ids) <= MAX_STOP_SEQUENCE_LEN][:MAX_STOP_SEQUENCES]
    sampling = SamplingParams.make(temperature, max(top_k, 0), top_p, stop_ids, seqs)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise APIError(400, "'seed' must be an integer", param="seed")
    ignored = tuple(sorted(k for k in body if k not in _KNOWN))
    stream = body.get("stream") is True
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage", False))
    return GenerationRequest(kind=kind, prompts=prompts, n=n, max_tokens=max_tokens, sampling=sampling,
                             seed=None if seed is None else int(seed) & 0xFFFFFFFF, stop=stop, logprobs=logprobs,
                             token_ids_as_text=_bool(body, "return_tokens_as_token_ids"), ignored_fields=ignored,
                             stream=stream, include_usage=include_usage)


_KNOWN = _HARMLESS | set(_UNSUPPORTED_UNLESS) | {
    "messages", "prompt", "n", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop",
    "stop_token_ids", "ignore_eos", "seed", "logprobs", "return_tokens_as_token_ids", "response_format", "best_of"}


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise APIError(400, "'stop' must be a non-empty string or a list of at most 4 of them", param="stop")
    return tuple(stops)


def _is_off(value: Any, off: tuple[Any, ...]) -> bool:
    """Whether `value` is one of the "feature off" values (False is not 0 here, nor 0 False)."""
    return any(value is v or (type(value) is type(v) and value == v) or
               (_is_int(value) and isinstance(v, float) and value == v) for v in off)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(body: dict[str, Any], name: str, default: int | None, *, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if not _is_int(v) or not lo <= v <= hi:
        raise APIError(400, f"'{name}' must be an integer in [{lo}, {hi}], got {str(v)[:40]}", param=name)
    return int(v)


def _num(body: dict[str, Any], name: str, default: float, *, lo: float, hi: float = math.inf) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise APIError(400, f"'{name}' must be a finite number in [{lo}, {hi}], got {str(v)[:40]}", param=name)
    return float(v)


def _bool(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise APIError(400, f"'{name}' must be true or false", param=name)
    return v


# ---------------------------------------------------------------------------- responses


@dataclasses.dataclass
class FinishedChoice:
    """One row's answer after end-of-turn and stop-string handling."""

    text: str
    tokens: list[int]  # the content tokens `text` was decoded from (stop string's tokens included)
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    completion_tokens: int  # what usage counts: the generated tokens up to the stop, end-of-turn token included


def finish_choices(completions: Sequence[Completion], codec: TextCodec, stop: Sequence[str]) -> list[FinishedChoice]:
    out = []
    for c in completions:
        tokens = list(c.tokens)
        logps = list(c.logprobs)
        if c.stop_reason == "stop_token" and tokens:  # the end-of-turn token is not content
            tokens, logps = tokens[:-1], logps[:-1]
        cut = codec.trim(tokens, stop)
        finish = "stop" if cut.stopped or c.stop_reason != "length" else "length"
        out.append(FinishedChoice(cut.text, tokens[:cut.num_tokens], logps[:cut.num_tokens], finish,
                                  cut.num_tokens + (len(c.tokens) - len(tokens))))
    return out


def usage_body(req: GenerationRequest, choices: Sequence[FinishedChoice]) -> dict[str, int]:
    prompt_tokens = sum(len(p) for p in req.prompts)  # counted once for all n choices, as OpenAI does
    completion_tokens = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_body(req: GenerationRequest, tokens: Sequence[int], logps: Sequence[float], codec: TextCodec,
                  text_offset: int = 0) -> dict[str, Any] | None:
    """The `logprobs` of a choice (or of a streamed chunk's tokens) in the endpoint's shape."""
    if not req.logprobs:
        return None
    entries = _logprob_entries(list(tokens), list(logps), codec, req.token_ids_as_text)
    if req.kind == "chat":
        return {"content": entries}
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": None, "text_offset": _offsets(entries, text_offset)}


def response_id(req: GenerationRequest) -> str:
    return f"{'chatcmpl' if req.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def build_response(req: GenerationRequest, completions: Sequence[Completion], codec: TextCodec,
                   model_name: str) -> dict[str, Any]:
    """The chat.completion / text_completion body for `completions` (one per row of `req.rows`)."""
    finished = finish_choices(completions, codec, req.stop)
    choices = []
    for i, c in enumerate(finished):
        lp = logprobs_body(req, c.tokens, c.logprobs, codec)
        if req.kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": lp,
                            "finish_reason": c.finish_reason})
        else:
            choices.append({"index": i, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason})
    obj = "chat.completion" if req.kind == "chat" else "text_completion"
    return {"id": response_id(req), "object": obj, "created": int(time.time()), "model": model_name,
            "choices": choices, "system_fingerprint": None, "usage": usage_body(req, finished)}


def _logprob_entries(tokens: list[int], logps: list[float], codec: TextCodec, as_ids: bool) -> list[dict[str, Any]]:
    out = []
    for t, lp in zip(tokens, logps):
        raw = codec.token_bytes(t)
        lp = float(lp) if math.isfinite(lp) else _VERY_UNLIKELY  # JSON has no -Infinity
        out.append({"token": f"token_id:{t}" if as_ids else raw.decode("utf-8", errors="replace"),
                    "logprob": lp, "bytes": list(raw), "top_logprobs": []})
    return out


def _offsets(entries: list[dict[str, Any]], start: int = 0) -> list[int]:
    offsets, pos = [], start
    for e in entries:
        offsets.append(pos)
        pos += len(bytes(e["bytes"]).decode("utf-8", errors="replace"))
    return offsets


def models_body(limits: ServeLimits, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": limits.model_name, "object": "model", "created": created,
                                        "owned_by": "skillsd_jax", "max_model_len": limits.context_len}]}
