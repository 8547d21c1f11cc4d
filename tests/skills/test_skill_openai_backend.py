"""OpenAI-compatible backend against a local fake server: failures are counted, logged, retried where
transient, never raised, and the API key never shows up in logs, errors or reprs."""

import json
import logging
import socket

import pytest
from skills_testlib import GOOD_SKILL, FakeChatServer, episode, turn

from skillsd_jax.skills.backends.openai_backend import OpenAISummarizer

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
def eps():
    return [episode("e1", [turn("open door", 0.0), turn("go east", 1.0, done=True)], won=True),
            episode("e2", [turn("look", 0.0), turn(None, -0.1)], won=False)]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("SKILLS_TEST_KEY", KEY)


def _client(url: str, **kw) -> OpenAISummarizer:
    kw = {"timeout_s": 2.0, "max_retries": 2, **kw}
    return OpenAISummarizer(url, "tiny-model", api_key_env="SKILLS_TEST_KEY", **kw)


def _no_key_anywhere(client: OpenAISummarizer, caplog) -> None:
    assert KEY not in caplog.text
    assert KEY not in repr(client) and KEY not in str(vars(client))


def test_success_sends_model_messages_and_key(eps, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer([("ok", GOOD_SKILL)]) as srv:
        client = _client(srv.url)
        skills = client.summarize(eps, step=3)
    assert len(skills) == 1
    s = skills[0]
    assert (s.task_id, s.env, s.created_step, s.source_episode_ids) == ("tw/1", "textworld", 3, ["e1", "e2"])
    assert s.golden_workflow == "1. open door\n2. go east\n3. take coin"
    assert s.metadata == {"summarizer": "openai", "model": "tiny-model"}
    req = srv.requests[0]
    assert req["path"] == "/v1/chat/completions"
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "tiny-model" and req["body"]["messages"][0]["role"] == "system"
    assert "go east" in req["body"]["messages"][1]["content"]
    _no_key_anywhere(client, caplog)


def test_connection_refused_is_retried_then_given_up(eps, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1")
    assert client.summarize(eps, step=0) == []
    st = client.stats()
    assert st["connection_errors"] == 3 and st["retries"] == 2 and st["failed_requests"] == 1
    assert st["failures"] == 1 and "failed after 3 attempt(s)" in caplog.text
    _no_key_anywhere(client, caplog)


def test_slow_server_times_out(eps, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer([("sleep", 1.0, GOOD_SKILL)]) as srv:
        client = _client(srv.url, timeout_s=0.2, max_retries=1)
        assert client.summarize(eps, step=0) == []
    st = client.stats()
    assert st["timeouts"] == 2 and st["failed_requests"] == 1 and "timeout" in caplog.text
    _no_key_anywhere(client, caplog)


@pytest.mark.parametrize("code", [500, 503, 429])
def test_transient_error_then_ok_retries_and_succeeds(eps, caplog, code):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer([("status", code, "echo"), ("ok", GOOD_SKILL)]) as srv:
        client = _client(srv.url)
        skills = client.summarize(eps, step=0)
    assert len(skills) == 1 and len(srv.requests) == 2
    st = client.stats()
    assert st["retries"] == 1 and st.get("http_5xx", 0) + st.get("http_429", 0) == 1
    _no_key_anywhere(client, caplog)  # the server echoed our headers; the logged body is redacted


def test_client_error_is_not_retried(eps, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer([("status", 401, "echo")]) as srv:
        client = _client(srv.url)
        assert client.summarize(eps, step=0) == []
    assert len(srv.requests) == 1 and client.stats()["http_4xx"] == 1 and "HTTP 401" in caplog.text
    _no_key_anywhere(client, caplog)


def test_malformed_response_body(eps, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeChatServer([("raw", b"<html>gateway exploded</html>")]) as srv:
        client = _client(srv.url)
        assert client.summarize(eps, step=0) == []
    assert len(srv.requests) == 1 and client.stats()["bad_response"] == 1 and "malformed" in caplog.text
    with FakeChatServer([("raw", json.dumps({"choices": []}).encode())]) as srv:
        client = _client(srv.url)
        assert client.summarize(eps, step=0) == []
    assert client.stats()["bad_response"] == 1
    _no_key_anywhere(client, caplog)


def test_reply_missing_fields_is_re_asked_then_dropped(eps, caplog):
    caplog.set_level(logging.DEBUG)
    bad = json.dumps({"success_analysis": "a", "mistake_analysis": "b"})
    with FakeChatServer([("ok", bad)]) as srv:
        client = _client(srv.url, parse_retries=1)
        assert client.summarize(eps, step=0) == []
    assert len(srv.requests) == 2 and client.stats()["invalid_output"] == 2
    assert "missing field 'golden_workflow'" in caplog.text
    with FakeChatServer([("ok", "not json at all"), ("ok", "```json\n" + GOOD_SKILL + "\n```")]) as srv:
        client = _client(srv.url, parse_retries=1)
        assert len(client.summarize(eps, step=0)) == 1  # the second answer is valid
    _no_key_anywhere(client, caplog)


def test_no_key_set_sends_no_authorization(eps, monkeypatch):
    monkeypatch.delenv("SKILLS_TEST_KEY")
    with FakeChatServer([("ok", GOOD_SKILL)]) as srv:
        assert len(_client(srv.url).summarize(eps, step=0)) == 1
    assert "authorization" not in {k.lower() for k in srv.requests[0]["headers"]}


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="base_url"):
        OpenAISummarizer("localhost:8000", "m")
