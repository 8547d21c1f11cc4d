"""Concurrent requests share sampler calls and get the sequential answers; the batcher's grouping rules;
graceful shutdown."""

from __future__ import annotations

import threading
import time
import urllib.error

import pytest
from serve_testlib import call, chat_body

from skillsd_jax.sampling import Completion, SamplingParams
from skillsd_jax.serve import Batcher, BatcherClosed

PROMPTS = ["Open the door to the hall.", "Take the lamp, go west.", "Look around the room.", "Push the box left.",
           "What is in the drawer?", "Go east twice, then north."]


class CountingSampler:
    """Wraps a real sampler and records every generate call (rows, max_new_tokens, sampling, seed)."""

    def __init__(self, inner):
        self.inner, self.calls, self.lock = inner, [], threading.Lock()

    def generate(self, params, prompts, *, max_new_tokens, sampling, seed=0):
        with self.lock:
            self.calls.append((len(prompts), max_new_tokens, sampling, seed))
        return self.inner.generate(params, prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)


def test_concurrent_requests_are_batched_and_match_sequential(server):
    url = server.url + "/v1/chat/completions"
    bodies = [chat_body(p, temperature=0, max_tokens=6 + i) for i, p in enumerate(PROMPTS)]
    sequential = []
    for b in bodies:
        status, out = call(url, b)
        assert status == 200
        sequential.append(out["choices"][0])
    counter = CountingSampler(server.batcher.sampler)
    server.batcher.sampler = counter
    try:
        results: list = [None] * len(bodies)
        start = threading.Barrier(len(bodies))

        def worker(i: int) -> None:
            start.wait()
            results[i] = call(url, bodies[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.batcher.sampler = counter.inner
    assert all(r is not None and r[0] == 200 for r in results), results
    assert [r[1]["choices"][0] for r in results] == sequential
    assert 1 <= len(counter.calls) < len(bodies), counter.calls
    assert sum(c[0] for c in counter.calls) == len(bodies)
    # Each request got no more tokens than it asked for, though it shared a call with longer ones.
    for i, (_, out) in enumerate(results):
        assert out["usage"]["completion_tokens"] <= 6 + i


class FakeSampler:
    """Model-free stand-in for the batcher's unit tests: row r of a call answers [call, r, ...]."""

    def __init__(self, fail: bool = False, delay: float = 0.0):
        self.calls, self.fail, self.delay = [], fail, delay

    def generate(self, params, prompts, *, max_new_tokens, sampling, seed=0):
        self.calls.append({"rows": [list(p) for p in prompts], "max_new": max_new_tokens, "sampling": sampling,
                           "seed": seed, "params": params})
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("device lost")
        k = len(self.calls)
        return [Completion([k, r] + [7] * (max_new_tokens - 2), [-0.5] * max_new_tokens, "length")
                for r in range(len(prompts))]


def _submit_together(batcher, jobs):
    """Submits jobs in quick succession: the worker's collection window (0.2 s) gathers them all."""
    return [batcher.submit(rows, max_new_tokens=m, sampling=s, seed=seed) for rows, m, s, seed in jobs]


GREEDY = SamplingParams.make(temperature=0.0)
HOT = SamplingParams.make(temperature=1.0)


def test_batcher_groups_by_sampling_and_length_bucket_and_isolates_seeded_jobs():
    fake = FakeSampler()
    b = Batcher(fake, lambda: "params-v1", max_batch=8, window_s=0.2)
    futs = _submit_together(b, [
        ([[1]], 4, GREEDY, None), ([[2], [3]], 10, GREEDY, 5),  # greedy: seed ignored, same call
        ([[4]], 300, GREEDY, None),  # another max_new bucket
        ([[5]], 4, HOT, 11), ([[6]], 4, HOT, 11),  # seeded sampling: each alone, with its seed
        ([[7]], 4, HOT, None), ([[8]], 4, HOT, None),  # unseeded sampling: together
    ])
    outs = [f.result(10) for f in futs]
    b.close()
    calls = fake.calls
    assert [c["rows"] for c in calls] == [[[1], [2], [3]], [[4]], [[5]], [[6]], [[7], [8]]]
    assert [c["max_new"] for c in calls] == [10, 300, 4, 4, 4]
    assert [c["seed"] for c in calls][2:4] == [11, 11] and all(c["params"] == "params-v1" for c in calls)
    # Rows come back to their own job, cut to that job's max_new_tokens.
    assert outs[0][0].tokens == [1, 0, 7, 7] and outs[0][0].stop_reason == "length"
    assert [o.tokens[:2] for o in outs[1]] == [[1, 1], [1, 2]] and len(outs[1][0].tokens) == 10
    assert b.stats()["device_calls"] == 5 and b.stats()["shared_calls"] == 2


def test_batcher_job_arriving_during_a_call_joins_the_next_call():
    fake = FakeSampler(delay=0.3)
    b = Batcher(fake, lambda: None, max_batch=8, window_s=0.1)
    first = _submit_together(b, [([[1]], 4, GREEDY, None), ([[2]], 4, HOT, None)])
    deadline = time.monotonic() + 10
    while not fake.calls:  # call 1 (the greedy job) is running
        assert time.monotonic() < deadline
        time.sleep(0.005)
    late = b.submit([[3]], max_new_tokens=4, sampling=HOT)  # shares call 2 with the waiting HOT job
    [f.result(10) for f in first + [late]]
    b.close()
    assert [c["rows"] for c in fake.calls] == [[[1]], [[2], [3]]]
    assert b.stats()["joined_while_busy"] == 1


def test_batcher_respects_max_batch_and_keeps_jobs_whole():
    fake = FakeSampler()
    b = Batcher(fake, lambda: None, max_batch=3, window_s=0.2)
    futs = _submit_together(b, [([[1], [1]], 4, GREEDY, None), ([[2], [2]], 4, GREEDY, None),
                                ([[3]] * 5, 4, GREEDY, None)])
    [f.result(10) for f in futs]
    b.close()
    sizes = [len(c["rows"]) for c in fake.calls]
    assert sum(sizes) == 9 and 5 in sizes and all(s <= 3 for s in sizes if s != 5)


def test_batcher_failure_reaches_every_caller_and_worker_survives(caplog):
    fake = FakeSampler(fail=True)
    b = Batcher(fake, lambda: None, window_s=0.05)
    futs = _submit_together(b, [([[1]], 4, GREEDY, None), ([[2]], 4, GREEDY, None)])
    for f in futs:
        with pytest.raises(RuntimeError, match="device lost"):
            f.result(10)
    fake.fail = False
    assert len(b.submit([[3]], max_new_tokens=4, sampling=GREEDY).result(10)) == 1
    b.close()
    assert b.stats()["errors"] == 1 and "Traceback" in caplog.text


def test_batcher_close_finishes_queued_work_then_refuses():
    fake = FakeSampler(delay=0.2)
    b = Batcher(fake, lambda: None, max_batch=1, window_s=0.0)
    futs = [b.submit([[i]], max_new_tokens=4, sampling=GREEDY) for i in range(3)]
    b.close(timeout=10)
    assert all(len(f.result(0)) == 1 for f in futs)
    with pytest.raises(BatcherClosed):
        b.submit([[9]], max_new_tokens=4, sampling=GREEDY)


def test_graceful_close_lets_running_request_finish(model, tok):
    from skillsd_jax.serve import start_server

    # A long batching window keeps the request waiting in the batcher while close() begins.
    srv = start_server(model, tok, served_model_name="tiny", batch_window_s=0.5)
    result = {}
    slow = chat_body("Open the door to the hall.", temperature=0, max_tokens=16, ignore_eos=True)
    t = threading.Thread(target=lambda: result.update(r=call(srv.url + "/v1/chat/completions", slow, key=None)))
    t.start()
    deadline = time.monotonic() + 30
    while srv.stats()["jobs"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    srv.close(timeout=60)
    t.join(60)
    status, out = result["r"]
    assert status == 200 and out["usage"]["completion_tokens"] == 16
    with pytest.raises(urllib.error.URLError):
        call(srv.url + "/health", key=None, timeout=2)


def test_graceful_close_finishes_a_running_stream(model, tok):
    import openai

    from skillsd_jax.serve import start_server

    srv = start_server(model, tok, served_model_name="tiny", batch_window_s=0.5)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Open the door."}],
                                            temperature=0, max_tokens=16, stream=True, extra_body={"ignore_eos": True},
                                            stream_options={"include_usage": True})
    first = next(iter(stream))  # the stream is open; its job waits in the batching window
    closer = threading.Thread(target=srv.close, kwargs={"timeout": 60})
    closer.start()
    rest = list(stream)
    closer.join(60)
    assert first.choices[0].delta.role == "assistant"
    assert rest[-1].usage.completion_tokens == 16 and rest[-2].choices[0].finish_reason == "length"
    client.close()
    with pytest.raises(urllib.error.URLError):
        call(srv.url + "/health", key=None, timeout=2)
