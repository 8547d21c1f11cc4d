"""The summarizer backends against the REAL model stack: our OpenAI-compatible server over a tiny random
model, and `make_generate_fn` over the JAX sampler.

A random 1-layer model writes no skill JSON, so these tests check the honest path: every request is
accepted and answered by the server, the reply fails parsing, the failure is counted and logged, and
the caller gets no skill and no exception. (Successful parsing is covered with a scripted fake server in
test_skill_openai_backend.py; nothing here fakes our server's output.)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time

import pytest
from skills_testlib import episode, turn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "serve"))
from serve_testlib import call, template_ids, tiny_checkpoint  # noqa: E402

from skillsd_jax.models.tokenizer import stop_ids  # noqa: E402
from skillsd_jax.skills.backends.openai_backend import OpenAISummarizer  # noqa: E402
from skillsd_jax.skills.backends.policy_backend import PolicySummarizer  # noqa: E402
from skillsd_jax.skills.backends.sampler_generate import make_generate_fn  # noqa: E402
from skillsd_jax.skills.bank import SkillBank  # noqa: E402
from skillsd_jax.skills.prompting import build_summary_messages  # noqa: E402
from skillsd_jax.skills.summarizer import AsyncSummarizer  # noqa: E402

KEY = "sk-live-SECRET-4242"
NAME = "tiny-live"


def _group(task: str = "tw/1"):
    return [episode(f"{task}-a", [turn("open door", 0.0), turn("go east", 1.0, done=True)], task=task, won=True),
            episode(f"{task}-b", [turn("look", 0.0), turn(None, -0.1)], task=task)]


@pytest.fixture(scope="module")
def tok():
    from skillsd_jax.models.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tmp_path_factory, tok):
    from skillsd_jax.models import load_hf_model

    return load_hf_model(tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_live")), tok, seed=3))


@pytest.fixture(scope="module")
def live(model, tok):
    from skillsd_jax.serve import start_server

    handle = start_server(model, tok, served_model_name=NAME, api_key=KEY)
    yield handle
    handle.close()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("LIVE_TEST_KEY", KEY)


def _client(live, **kw) -> OpenAISummarizer:
    kw = {"timeout_s": 60.0, "max_retries": 1, "max_tokens": 48, **kw}
    return OpenAISummarizer(live.url + "/v1", NAME, api_key_env="LIVE_TEST_KEY", **kw)


def test_openai_backend_requests_are_accepted_and_bad_replies_counted(live, tok, caplog):
    caplog.set_level(logging.INFO)
    client = _client(live, extra_body={"seed": 1234, "stop": ["\n\n\n\n"], "user": "skillsd-test"})
    jobs_before = live.stats()["jobs"]
    assert client.summarize(_group(), step=5) == []
    st = client.stats()
    # parse_retries=1: the group is asked twice; both requests answered 200 and both replies rejected.
    assert st["http_requests"] == 2 and st["requests"] == 2 and st["invalid_output"] == 2
    assert st["parse_retries"] == 1 and st["failures"] == 1 and st.get("skills", 0) == 0
    for bad in ("http_4xx", "http_5xx", "bad_response", "timeouts", "connection_errors", "unexpected_errors"):
        assert bad not in st, st
    assert live.stats()["jobs"] - jobs_before == 2
    # The server saw exactly the backend's messages (same templated length) and understood every field.
    served = re.findall(r"POST /v1/chat/completions 200 \S+ rows=1 prompt=(\d+) completion=(\d+)(.*)", caplog.text)
    expected_prompt = len(template_ids(tok, build_summary_messages(_group())))
    assert [int(p) for p, _, _ in served] == [expected_prompt] * 2
    assert all(1 <= int(c) <= 48 and "ignored" not in rest for _, c, rest in served)
    assert "invalid skill reply for task tw/1" in caplog.text
    assert KEY not in caplog.text


def test_openai_backend_times_out_on_long_generation_and_retries(live, tok):
    body = {"model": NAME, "messages": build_summary_messages(_group()), "temperature": 0.3, "max_tokens": 512,
            "ignore_eos": True}
    took = []
    for _ in range(3):  # the first call compiles; keep the fastest warm one
        t0 = time.perf_counter()
        status, out = call(live.url + "/v1/chat/completions", body, key=KEY)
        took.append(time.perf_counter() - t0)
        assert status == 200 and out["usage"]["completion_tokens"] == 512
    timeout = max(0.005, min(took) / 5)
    client = _client(live, timeout_s=timeout, max_tokens=512, extra_body={"ignore_eos": True}, parse_retries=0)
    assert client.summarize(_group(), step=0) == []
    st = client.stats()
    assert st["timeouts"] == 2 and st["retries"] == 1 and st["failed_requests"] == 1 and st["failures"] == 1
    assert "invalid_output" not in st
    assert call(live.url + "/health", key=None)[0] == 200  # clients that left do not hurt the server


def test_policy_summarizer_through_real_sampler(model, tok, caplog):
    from skillsd_jax.sampling import Sampler, SamplingParams

    caplog.set_level(logging.INFO)
    sampler, params = Sampler.for_model(model)
    # temperature 0.3 as the OpenAI tests use (one compiled program for both); a fixed seed to compare with.
    gen = make_generate_fn(sampler, lambda: params, temperature=0.3, stop_token_ids=stop_ids(tok), seed_fn=lambda: 0)
    seen = []

    def recording(prompts, n):
        out = gen(prompts, n)
        seen.append((prompts, n, out))
        return out

    summ = PolicySummarizer(recording, tok, max_new_tokens=40, max_prompt_tokens=900)
    assert summ.summarize(_group(), step=1) == []
    st = summ.stats()
    assert st["requests"] == 2 and st["invalid_output"] == 2 and st["failures"] == 1
    assert "generate_errors" not in st and "decode_errors" not in st
    assert "invalid skill reply" in caplog.text
    # What the summarizer parsed is the sampler's output for the templated prompt.
    prompts, n, out = seen[0]
    assert prompts[0] == template_ids(tok, build_summary_messages(_group())) and n == 40
    ref = sampler.generate(params, prompts, max_new_tokens=40, seed=0,
                           sampling=SamplingParams.make(temperature=0.3, stop_token_ids=stop_ids(tok)))[0]
    assert out[0] == [t for t in ref.tokens if t not in stop_ids(tok)] and len(out[0]) >= 1


def test_generate_fn_uses_current_params(model, tok):
    import jax
    from flax import nnx

    from skillsd_jax.sampling import Sampler

    sampler, params = Sampler.for_model(model)
    current = {"p": params}
    gen = make_generate_fn(sampler, lambda: current["p"], temperature=0.0, stop_token_ids=stop_ids(tok))
    prompt = [template_ids(tok, [{"role": "user", "content": "Open the chest."}])]
    before = gen(prompt, 12)
    # A different policy with the same shapes (no recompilation): a fresh random init, as after updates.
    from skillsd_jax.models import Transformer
    from skillsd_jax.sampling import SamplingParams

    other = nnx.state(Transformer(model.config, rngs=nnx.Rngs(99)))
    current["p"] = jax.tree.map(lambda x: x * 8.0 if x.ndim == 2 else x, other)
    after = gen(prompt, 12)
    assert after != before
    ref = sampler.generate(current["p"], prompt, max_new_tokens=12,
                           sampling=SamplingParams.make(temperature=0.0, stop_token_ids=stop_ids(tok)))[0]
    assert after[0] == [t for t in ref.tokens if t not in stop_ids(tok)]
    current["p"] = params
    assert gen(prompt, 12) == before


def test_generate_fn_holds_the_shared_lock_and_seeds(model, tok):
    from skillsd_jax.sampling import Sampler

    sampler, params = Sampler.for_model(model)
    lock = threading.Lock()
    gen = make_generate_fn(sampler, lambda: params, temperature=1.0, stop_token_ids=stop_ids(tok), lock=lock,
                           seed_fn=lambda: 7)
    prompt = [template_ids(tok, [{"role": "user", "content": "Take the key."}])]
    first = gen(prompt, 8)
    assert gen(prompt, 8) == first  # same seed, same sample
    done = threading.Event()
    with lock:  # e.g. the trainer is using the device: the summary must wait
        t = threading.Thread(target=lambda: (gen(prompt, 8), done.set()))
        t.start()
        assert not done.wait(0.3)
    assert done.wait(30)
    t.join()
    free = make_generate_fn(sampler, lambda: params, temperature=1.0, stop_token_ids=stop_ids(tok))
    outs = [free(prompt * 2, 8) for _ in range(3)]  # default seeds 0, 1, 2
    assert len({tuple(map(tuple, o)) for o in outs}) > 1
    with pytest.raises(ValueError, match="context"):
        free([[5] * 1020], 8)


def test_async_summarizer_with_live_backend(live, tmp_path):
    bank = SkillBank(tmp_path / "bank.db")
    client = _client(live, parse_retries=0)
    pool = AsyncSummarizer(client, bank, max_workers=1, max_queue=2)
    worst, accepted = 0.0, 0
    for k in range(6):
        t0 = time.perf_counter()
        accepted += pool.submit(_group(f"tw/{k}"), step=k)
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.05  # the learner never waits for the server
    assert pool.drain(timeout=60)
    st = pool.stats()
    pool.close()
    assert st["submitted"] == accepted and st["submitted"] + st["dropped"] == 6 and accepted >= 2
    assert st["completed"] == st["empty"] == accepted and st["failed"] == 0 and st["skills_added"] == 0
    back = st["backend"]
    assert back["http_requests"] == back["invalid_output"] == back["failures"] == accepted
    assert bank.all_skills() == []
    bank.close()


def test_live_replies_are_not_skills_by_construction(live):
    """Guards the premise above: the tiny random model's reply really is not JSON."""
    status, out = call(live.url + "/v1/chat/completions",
                       {"model": NAME, "messages": build_summary_messages(_group()), "temperature": 0.3,
                        "max_tokens": 48}, key=KEY)
    assert status == 200
    text = out["choices"][0]["message"]["content"]
    assert text and not text.lstrip().startswith("{")
    assert 1 <= out["usage"]["completion_tokens"] <= 48


def test_openai_backend_server_down_is_counted_and_training_goes_on(model, tok, caplog):
    from skillsd_jax.serve import start_server

    caplog.set_level(logging.INFO)
    srv = start_server(model, tok, served_model_name=NAME, api_key=KEY)
    srv.close()  # a server that was there and went away: its port now refuses connections
    client = _client(srv, max_retries=1, parse_retries=0)
    assert client.summarize(_group(), step=0) == []
    st = client.stats()
    assert st["connection_errors"] == 2 and st["retries"] == 1 and st["failed_requests"] == 1 and st["failures"] == 1
    assert "failed after 2 attempt(s): connection error" in caplog.text and KEY not in caplog.text


def test_openai_backend_server_500_is_retried_counted_and_logged(model, tok, caplog):
    from skillsd_jax.serve import start_server

    def broken_params():
        raise RuntimeError("parameter store unreachable")

    caplog.set_level(logging.INFO)
    with start_server(model, tok, served_model_name=NAME, api_key=KEY, params_fn=broken_params) as srv:
        client = _client(srv, max_retries=1, parse_retries=0)
        assert client.summarize(_group(), step=0) == []
    st = client.stats()
    assert st["http_requests"] == 2 and st["http_5xx"] == 2 and st["retries"] == 1 and st["failed_requests"] == 1
    assert "HTTP 500" in caplog.text and "unreachable" not in caplog.text.split("HTTP 500", 1)[1].split("\n", 1)[0]
    assert KEY not in caplog.text


def test_openai_backend_waits_out_a_full_queue(model, tok):
    """The server's 429 (queue bound) carries Retry-After; the SDK waits and retries, and the answer arrives."""
    from skillsd_jax.sampling import SamplingParams
    from skillsd_jax.serve import start_server

    lock = threading.Lock()
    with start_server(model, tok, served_model_name=NAME, api_key=KEY, max_queued=1, batch_window_s=0.0,
                      lock=lock) as srv:
        client = _client(srv, max_retries=2, parse_retries=0)
        greedy = SamplingParams.make(temperature=0.0)
        with lock:  # the device is busy: one job is on it, one waits, so the backend's request gets 429
            running = srv.batcher.submit([[1, 2, 3]], max_new_tokens=2, sampling=greedy)
            while srv.stats()["queued"]:
                time.sleep(0.005)
            waiting = srv.batcher.submit([[1, 2, 3]], max_new_tokens=2, sampling=greedy)
            result = []
            t = threading.Thread(target=lambda: result.append(client.summarize(_group(), step=0)))
            t.start()
            deadline = time.monotonic() + 30
            while srv.stats()["rejected_busy"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.005)
        t.join(60)
        running.result(30), waiting.result(30)
    st = client.stats()
    assert result == [[]] and st["http_429"] >= 1 and st["retries"] >= 1
    assert st["invalid_output"] == 1 and "failed_requests" not in st  # answered; the random model wrote no skill
