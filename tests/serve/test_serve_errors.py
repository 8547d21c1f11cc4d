"""Bad requests get OpenAI-shaped errors with the right status; internal errors are logged, never leaked."""

from __future__ import annotations

import http.client
import logging
import urllib.parse

import pytest
from serve_testlib import CONTEXT, KEY, assert_error_shape, call, chat_body

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    (chat_body("hi", temperature=-1), "temperature"),
    (chat_body("hi", temperature="hot"), "temperature"),
    (chat_body("hi", top_p=0), "top_p"),
    (chat_body("hi", n=9), "n"),
    (chat_body("hi", max_tokens=0), "max_tokens"),
    (chat_body("hi", max_tokens=513), "max_tokens"),  # above the server's max_new_tokens_limit
    (chat_body("hi", max_tokens=True), "max_tokens"),
    (chat_body("hi", stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat_body("hi", seed="x"), "seed"),
    (chat_body("hi", stream="yes"), "stream"),
    (chat_body("hi", stream_options={"include_usage": True}), "stream_options"),  # without stream=true
    (chat_body("hi", stream=True, stream_options={"include_usage": "yes"}), "stream_options"),
    (chat_body("hi", tools=[{"type": "function"}]), "tools"),
    (chat_body("hi", presence_penalty=0.5), "presence_penalty"),
    (chat_body("hi", top_logprobs=3), "top_logprobs"),
    (chat_body("hi", response_format={"type": "json_object"}), "response_format"),
])
def test_bad_parameters_are_400(server, body, param):
    status, out = call(server.url + CHAT, body)
    assert status == 400, out
    assert_error_shape(out, 400)
    assert out["error"]["param"] == param


def test_invalid_json_is_400(server):
    status, out = call(server.url + CHAT, raw=b'{"messages": [')
    assert status == 400 and out["error"]["code"] == "invalid_json"
    assert_error_shape(out, 400)


def test_prompt_longer_than_context_is_400(server):
    status, out = call(server.url + "/v1/completions", {"prompt": [5] * CONTEXT, "max_tokens": 1})
    assert status == 400 and out["error"]["code"] == "context_length_exceeded", out
    # Fits alone, but not with the requested completion.
    status, out = call(server.url + "/v1/completions", {"prompt": [5] * (CONTEXT - 8), "max_tokens": 9})
    assert status == 400 and out["error"]["code"] == "context_length_exceeded"
    long_chat = chat_body("word " * (2 * CONTEXT))
    status, out = call(server.url + CHAT, long_chat)
    assert status == 400 and str(CONTEXT) in out["error"]["message"]


def test_token_ids_outside_vocab_are_400(server, tok):
    status, out = call(server.url + "/v1/completions", {"prompt": [1, len(tok)], "max_tokens": 1})
    assert status == 400 and out["error"]["param"] == "prompt"


@pytest.mark.parametrize("key", [None, "wrong", KEY + "x", ""])
def test_wrong_or_missing_key_is_401(server, key):
    for path, body in ((CHAT, chat_body("hi", max_tokens=1)), ("/v1/models", None)):
        status, out = call(server.url + path, body, key=key)
        assert status == 401 and out["error"]["code"] == "invalid_api_key"
        assert_error_shape(out, 401)
        assert KEY not in str(out)


def test_unknown_route_and_wrong_method(server):
    status, out = call(server.url + "/v1/embeddings", {"input": "x"})
    assert status == 404
    assert_error_shape(out, 404)
    status, out = call(server.url + CHAT, method="GET")
    assert status == 405


def test_wrong_model_name_is_404(server):
    status, out = call(server.url + CHAT, {**chat_body("hi"), "model": "gpt-4o"})
    assert status == 404 and out["error"]["code"] == "model_not_found"


def test_body_too_large_is_413_and_connection_survives(server):
    host = urllib.parse.urlparse(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    big = b'{"messages": "' + b"x" * (100 << 10) + b'"}'
    conn.request("POST", CHAT, body=big, headers={"Authorization": f"Bearer {KEY}",
                                                  "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 413 and b"exceeds the limit" in resp.read()
    conn.close()
    status, _ = call(server.url + "/health", key=None)  # the server still answers
    assert status == 200


def test_unknown_fields_are_ignored(server):
    status, out = call(server.url + CHAT, chat_body("Open the door to the hall.", max_tokens=2, temperature=0, frobnicate={"a": 1},
                                                    user="me", metadata={"k": "v"}))
    assert status == 200, out


def test_internal_error_is_500_logged_without_key(model, tok, caplog):
    from skillsd_jax.serve import start_server

    def broken_params():
        raise RuntimeError("parameter store unreachable")

    caplog.set_level(logging.INFO)
    with start_server(model, tok, served_model_name="tiny", api_key=KEY, params_fn=broken_params) as srv:
        status, out = call(srv.url + CHAT, chat_body("hi", max_tokens=2))
    assert status == 500
    assert_error_shape(out, 500)
    assert "parameter store unreachable" not in str(out)  # internals stay in the log
    assert "Traceback" in caplog.text and "parameter store unreachable" in caplog.text
    assert KEY not in caplog.text and KEY not in str(out)
    assert "POST /v1/chat/completions 500" in caplog.text
