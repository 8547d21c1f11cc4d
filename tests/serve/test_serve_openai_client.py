"""The official `openai` Python SDK as the server's client: plain and streamed chat and completions, the
usage chunk, and errors surfacing as the SDK's exception types."""

from __future__ import annotations

import threading
import time

import openai
import pytest
from serve_testlib import KEY

from skillsd_jax.serve import start_server

MSG = [{"role": "user", "content": "Push the box onto the target."}]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def _wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _joined(stream):
    """(text per choice index, finish_reason per index, usage chunk or None, number of chunks)."""
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage, n = None, 0
    for chunk in stream:
        n += 1
        if not chunk.choices:
            usage = chunk.usage
            continue
        for c in chunk.choices:
            piece = c.delta.content if hasattr(c, "delta") else c.text
            texts[c.index] = texts.get(c.index, "") + (piece or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return texts, finish, usage, n


def test_chat_plain_and_streamed_agree(client):
    plain = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=16)
    assert plain.object == "chat.completion" and plain.model == "tiny"
    text = plain.choices[0].message.content
    assert plain.choices[0].message.role == "assistant" and text
    stream = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True})
    texts, finish, usage, n = _joined(stream)
    assert texts == {0: text} and finish == {0: plain.choices[0].finish_reason}
    assert usage is not None and usage.model_dump() == plain.usage.model_dump()
    assert n >= 4  # role, at least one content piece, finish, usage


def test_streamed_chat_pieces_are_tokens_with_logprobs(client):
    plain = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=12, logprobs=True)
    entries = plain.choices[0].logprobs.content
    stream = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=12, logprobs=True,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)  # include_usage was not asked for
    streamed = [e for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
    pieces = [ch.delta.content for c in chunks for ch in c.choices if ch.delta.content]
    assert len(pieces) >= 2 and "".join(pieces) == plain.choices[0].message.content
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_streamed_n_choices(client):
    stream = client.chat.completions.create(model="tiny", messages=MSG, temperature=1.0, max_tokens=8, n=2, seed=5,
                                            stream=True, stream_options={"include_usage": True})
    texts, finish, usage, _ = _joined(stream)
    plain = client.chat.completions.create(model="tiny", messages=MSG, temperature=1.0, max_tokens=8, n=2, seed=5)
    assert texts == {c.index: c.message.content for c in plain.choices}
    assert set(finish) == {0, 1} and usage.completion_tokens == plain.usage.completion_tokens


def test_completions_plain_and_streamed(client):
    prompt = "You are in a kitchen. There is a table, a fridge and a door to the north."
    plain = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=10)
    assert plain.object == "text_completion" and plain.choices[0].text
    stream = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=10, stream=True,
                                       stream_options={"include_usage": True})
    texts, finish, usage, _ = _joined(stream)
    assert texts == {0: plain.choices[0].text} and finish == {0: plain.choices[0].finish_reason}
    assert usage.model_dump() == plain.usage.model_dump()


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_errors_are_the_sdks_exception_types(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSG, n=9)
    assert e.value.status_code == 400 and e.value.param == "n"
    with pytest.raises(openai.BadRequestError):  # validation happens before a stream starts
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=10**9, stream=True)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=MSG)
    assert e.value.code == "model_not_found"
    with openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_full_queue_is_rate_limit_error_and_stream_opens_before_generation(model, tok):
    lock = threading.Lock()
    with start_server(model, tok, served_model_name="tiny", max_queued=1, batch_window_s=0.0, lock=lock) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        with lock:  # the device is busy: the first request is taken by the worker and waits for the lock
            first = c.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=4, stream=True)
            opening = next(iter(first))  # the stream is open and the role chunk arrived before any generation
            assert opening.choices[0].delta.role == "assistant"
            _wait_until(lambda: srv.stats()["queued"] == 0)  # the worker has taken the first job
            second = threading.Thread(target=lambda: c.chat.completions.create(
                model="tiny", messages=MSG, temperature=0, max_tokens=4))
            second.start()
            _wait_until(lambda: srv.stats()["queued"] == 1)
            with pytest.raises(openai.RateLimitError) as e:
                c.chat.completions.create(model="tiny", messages=MSG, max_tokens=4)
            assert e.value.response.headers["retry-after"] == "1" and e.value.code == "overloaded"
        texts, finish, _, _ = _joined(first)
        second.join(60)
        assert finish == {0: "length"} or finish == {0: "stop"}
        assert srv.stats()["rejected_busy"] == 1
        c.close()


def test_error_during_a_stream_raises_api_error(model, tok):
    def broken_params():
        raise RuntimeError("parameter store unreachable")

    with start_server(model, tok, served_model_name="tiny", params_fn=broken_params) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0) as c:
            stream = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, stream=True)
            with pytest.raises(openai.APIError) as e:
                list(stream)
    assert "internal error" in str(e.value) and "unreachable" not in str(e.value)
