"""Each benchmark's `main` runs end to end on a tiny override and prints one JSON line with its figures."""

from __future__ import annotations

import json
import os
import sys

import pytest

# `benchmarks/` is a top-level folder, not part of the installed package: import it from the checkout.
_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

TRAIN_KEYS = ("tokens_per_s", "reference_tokens_per_s", "ratio", "mfu_of_measured_peak", "matmul_peak_gflops",
              "compile_s", "device")
ROLLOUT_KEYS = ("env_steps_per_s", "sample_share", "env_share", "glue_share", "compile_s", "first_call_s",
                "rollout_s", "device", "reference", "floor_s", "sample_floor_ratio", "timed_compilations")


def _one_json_line(capsys) -> dict:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {lines}"
    return json.loads(lines[0])


def test_train_step_benchmark_smoke(capsys):
    pytest.importorskip("torch")
    from benchmarks import train_step

    argv = ["--shape", "tiny", "--batch", "2", "--seq", "32", "--steps", "1", "--peak-n", "256", "--json"]
    returned = train_step.main(argv)
    out = _one_json_line(capsys)
    assert out == json.loads(json.dumps(returned))
    for key in TRAIN_KEYS:
        assert key in out, key
    for key in ("tokens_per_s", "reference_tokens_per_s", "ratio", "mfu_of_measured_peak", "matmul_peak_gflops",
                "compile_s", "flops_per_token"):
        assert out[key] > 0, key
    assert out["batch"] * out["seq"] / out["step_s"] == pytest.approx(out["tokens_per_s"])
    assert out["ratio"] == pytest.approx(out["tokens_per_s"] / out["reference_tokens_per_s"])
    assert out["reference"] == "pytorch-eager" and out["device"]


def test_train_step_rejects_indivisible_micro_batches():
    from benchmarks import train_step

    with pytest.raises(SystemExit):
        train_step.main(["--batch", "3", "--micro-batches", "2", "--no-reference"])


def test_sampler_benchmark_smoke(capsys):
    pytest.importorskip("torch")
    from benchmarks import sampler

    # --host-devices 2: the batch sharded over two of the test session's host devices.
    returned = sampler.main(["--batch", "4", "--prompt", "8", "--new", "4", "--repeats", "1", "--host-devices", "2",
                             "--json"])
    out = _one_json_line(capsys)
    assert out == json.loads(json.dumps(returned))
    for key in ("tokens_per_s", "decode_tokens_per_s", "reference_tokens_per_s", "ratio", "compile_s", "prefill_s"):
        assert out[key] > 0, key
    assert out["devices"] == 2 and out["reference"] == "pytorch-generate"
    assert out["ratio"] == pytest.approx(out["tokens_per_s"] / out["reference_tokens_per_s"])


def test_sampler_benchmark_rejects_indivisible_devices():
    from benchmarks import sampler

    with pytest.raises(SystemExit):
        sampler.main(["--batch", "3", "--host-devices", "2", "--no-reference"])


@pytest.mark.parametrize("layout,host_devices", [("per_step", 1), ("trajectory", 1), ("trajectory", 2)])
def test_rollout_benchmark_smoke(capsys, layout, host_devices):
    from benchmarks import rollout

    rollout.main(["--layout", layout, "--tasks", "2", "--group", "2", "--turns", "2", "--max-response-tokens", "8",
                  "--host-devices", str(host_devices), "--json"])
    out = _one_json_line(capsys)
    for key in ROLLOUT_KEYS:
        assert key in out, key
    assert out["reference"] is None and out["layout"] == layout and out["host_devices"] == host_devices
    assert out["episodes"] == 4 and 4 <= out["env_steps"] <= 8
    assert out["env_steps_per_s"] > 0 and out["rollout_s"] > 0 and out["first_call_s"] > 0
    shares = out["sample_share"] + out["env_share"] + out["glue_share"]
    assert all(out[k] >= 0 for k in ("sample_share", "env_share", "glue_share")) and shares == pytest.approx(1.0)


def test_serve_benchmark_smoke(capsys):
    from benchmarks import serve

    returned = serve.main(["--in-process", "--clients", "1,2", "--requests-per-client", "2", "--prompt", "8",
                           "--new", "4", "--repeats", "1", "--json"])
    out = _one_json_line(capsys)
    assert out == json.loads(json.dumps(returned))
    for c in (1, 2):
        for key in ("requests_per_s", "tokens_per_s", "p50_ms", "p99_ms", "ceiling_tokens_per_s"):
            assert out[f"c{c}_{key}"] > 0, (c, key)
        assert out[f"c{c}_requests"] == 2 * c and out[f"c{c}_tokens_per_request"] == 4  # ignore_eos: all 4 tokens
        assert out[f"c{c}_p50_ms"] <= out[f"c{c}_p99_ms"]
        assert out[f"c{c}_tokens_per_s"] == pytest.approx(4 * out[f"c{c}_requests_per_s"])


def test_serve_benchmark_rejects_bad_levels():
    from benchmarks import serve

    with pytest.raises(SystemExit):
        serve.main(["--clients", "1,x"])
    with pytest.raises(SystemExit):
        serve.main(["--clients", "0"])

def test_rollout_benchmark_synthetic_reports_its_floor(capsys):
    from benchmarks import rollout

    rollout.main(["--synthetic", "--tasks", "1", "--group", "2", "--turns", "2", "--max-response-tokens", "4",
                  "--prompt-tokens", "24", "--observation-tokens", "6", "--shared-prefix-tokens", "16",
                  "--repeats", "1", "--segment-slots", "8", "--json"])
    out = _one_json_line(capsys)
    assert out["segment_slots"] == 8
    assert out["generated_tokens"] == 2 * 2 * 4 and out["decode_steps"] == 2 * 4
    assert out["prefill_tokens"] == 16 + 2 * 8 + 2 * 6  # the shared prefix once, then each row's own tokens
    assert out["floor_s"] == pytest.approx(out["floor_decode_s"] + out["floor_prefill_s"])
    assert out["sample_floor_ratio"] == pytest.approx(out["sample_s"] / out["floor_s"])
    assert out["memory_bandwidth_gbs"] > 0 and out["matmul_peak_gflops"] > 0
    # The same work with the decode's bytes at the read-only probe: prefill unchanged, decode rescaled.
    decode_at_reads = out["floor_decode_s"] * out["memory_bandwidth_gbs"] / out["read_bandwidth_gbs"]
    assert out["floor_read_s"] == pytest.approx(out["floor_prefill_s"] + decode_at_reads)
    assert out["sample_read_floor_ratio"] == pytest.approx(out["sample_s"] / out["floor_read_s"])


def test_read_probe_counts_the_bytes_it_reads(monkeypatch):
    from benchmarks import floor

    clock = iter([0.0, 0.5] * 2)  # every timed pass takes 0.5 s on this clock
    monkeypatch.setattr(floor.time, "perf_counter", lambda: next(clock))
    assert floor.read_bandwidth_gbs(megabytes=4, repeats=2) == pytest.approx(4 * 2**20 / 0.5 / 1e9)
    with pytest.raises(ValueError, match="read probe"):
        floor.read_bandwidth_gbs(megabytes=0)


def test_rollout_benchmark_segment_default_is_the_samplers(capsys):
    from benchmarks import rollout
    from skillsd_jax.sampling.engine import SEGMENT_SLOTS

    rollout.main(["--synthetic", "--tasks", "1", "--group", "1", "--turns", "1", "--max-response-tokens", "2",
                  "--prompt-tokens", "8", "--repeats", "1", "--json"])
    assert _one_json_line(capsys)["segment_slots"] == SEGMENT_SLOTS


def test_decode_attention_benchmark_smoke(capsys):
    from benchmarks import decode_attention

    out = decode_attention.main(["--rows", "2", "--segments", "2", "--segment-slots", "16", "--repeats", "1",
                                 "--probe-megabytes", "4", "--one-core", "--json"])
    assert _one_json_line(capsys) == json.loads(json.dumps(out))
    assert out["key_bytes"] == out["value_bytes"] == 2 * (2 * 2 * 64 * 16) * 4  # segments x [rows, K, Dh, S] x f32
    for name in ("scores", "values", "segment"):
        assert out[f"{name}_gbs"] > 0
    assert out["segment_gbs"] == pytest.approx((out["key_bytes"] + out["value_bytes"]) / out["segment_s"] / 1e9)
    assert out["bandwidth_all_cores_gbs"] > 0
    if hasattr(os, "sched_setaffinity"):
        assert out["products_pinned_to_one_core"] and out["bandwidth_one_core_gbs"] > 0


def test_pinning_to_one_core_is_undone():
    from benchmarks.decode_attention import pinned_to_one_core

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    import threading

    before = os.sched_getaffinity(0)
    started_inside = []
    with pinned_to_one_core() as pinned:
        assert pinned and len(os.sched_getaffinity(0)) == 1
        gate = threading.Event()
        thread = threading.Thread(target=gate.wait)
        thread.start()  # inherits the one core
        started_inside.append(thread.native_id)
    try:
        assert os.sched_getaffinity(0) == before
        assert os.sched_getaffinity(started_inside[0]) == before  # a thread born pinned is released too
    finally:
        gate.set()
        thread.join()
