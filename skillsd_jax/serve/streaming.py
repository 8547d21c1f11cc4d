"""`stream: true`: the chunks OpenAI's API sends as server-sent events, built from finished completions.

A streamed chat answer is: one chunk per choice with `delta: {"role": "assistant", "content": ""}`, then
content chunks (one per token that completes text; a token that ends inside a UTF-8 character waits for
the next), one chunk per choice with an empty delta and its `finish_reason`, then, when the request set
`stream_options.include_usage`, a last chunk with `choices: []` and `usage` (every earlier chunk then
carries `usage: null`), then `data: [DONE]`. Completions stream `text` pieces the same way.

The sampler returns whole completions (one `generate` call), so the role chunk goes out as soon as the
request is queued and the content chunks once its call has finished.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from skillsd_jax.sampling import Completion
from skillsd_jax.serve.codec import TextCodec
from skillsd_jax.serve.protocol import (FinishedChoice, GenerationRequest, finish_choices, logprobs_body,
                                        usage_body)

SSE_DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One server-sent event carrying `obj` as JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n\n"


class ChunkWriter:
    """Builds the chunks of one streamed response (same id, creation time and model on every chunk)."""

    def __init__(self, req: GenerationRequest, response_id: str, model_name: str):
        self.req = req
        self.id = response_id
        self.model = model_name
        self.created = int(time.time())
        self.usage: dict[str, int] | None = None  # set by `content`

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.req.kind == "chat" else "text_completion"
        out: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                               "system_fingerprint": None, "choices": choices}
        if self.req.include_usage:
            out["usage"] = usage
        return out

    def opening(self) -> list[dict[str, Any]]:
        """The chunks sent before generation finishes: each chat choice's role (none for completions)."""
        if self.req.kind != "chat":
            return []
        return [self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}]) for i in range(len(self.req.rows))]

    def content(self, completions: Sequence[Completion], codec: TextCodec) -> list[dict[str, Any]]:
        """The content chunks, each choice's closing chunk and the usage chunk when asked for."""
        finished = finish_choices(completions, codec, self.req.stop)
        out = []
        for i, choice in enumerate(finished):
            offset = 0
            for start, end, delta in text_deltas(codec, choice):
                lp = logprobs_body(self.req, choice.tokens[start:end], choice.logprobs[start:end], codec, offset)
                offset += len(delta)
                if not delta and lp is None:
                    continue  # tokens that add no text (e.g. a special token) and no log-probs to show
                out.append(self.chunk([self._piece(i, delta, lp, None)]))
            out.append(self.chunk([self._piece(i, "", None, choice.finish_reason)]))
        self.usage = usage_body(self.req, finished)
        if self.req.include_usage:
            out.append(self.chunk([], self.usage))
        return out

    def _piece(self, index: int, text: str, logprobs: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        if self.req.kind == "chat":
            delta = {"content": text} if text or logprobs else {}
            return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def text_deltas(codec: TextCodec, choice: FinishedChoice) -> list[tuple[int, int, str]]:
    """(first token, end token, text) pieces whose texts join to `choice.text` and whose token ranges
    cover `choice.tokens` in order.

    A piece ends at the first token after which the decoded prefix agrees with the final text further
    than before; tokens that add no text yet (half a UTF-8 character, a skipped special token) join
    the next piece. Prefixes are decoded whole (quadratic in the completion length, bounded by the
    server's max_tokens limit) because decoding tokens one by one is not exact for every tokenizer.
    """
    text, tokens = choice.text, choice.tokens
    pieces: list[tuple[int, int, str]] = []
    start, emitted = 0, 0
    for k in range(1, len(tokens) + 1):
        if emitted == len(text):
            break
        prefix = codec.decode(tokens[:k])
        agreed = _common_prefix_len(prefix, text, emitted)
        if agreed > emitted:
            pieces.append((start, k, text[emitted:agreed]))
            start, emitted = k, agreed
    if emitted < len(text) or start < len(tokens):  # the rest: text cut by a stop string, trailing tokens
        if pieces and emitted == len(text):
            s, _, t = pieces.pop()
            pieces.append((s, len(tokens), t))
        else:
            pieces.append((start, len(tokens), text[emitted:]))
    return pieces


def _common_prefix_len(a: str, b: str, known: int) -> int:
    """Length of the common prefix of `a` and `b`, given that their first `known` characters agree."""
    n = min(len(a), len(b))
    i = min(known, n)
    while i < n and a[i] == b[i]:
        i += 1
    return i
