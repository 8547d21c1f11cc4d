"""MetricsWriter: TensorBoard event files read back record by record, resume purging, W&B wiring."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
import types

import pytest

from skillsd_jax.train.metrics import MetricsWriter


def read_event_scalars(logdir: str) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    """Every scalar in the TFRecord event files of `logdir` ({tag: [(step, value)]}, files in order),
    and the steps of the session-start records that carry a purge step."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    starts: list[int] = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12:pos + 12 + length]  # after the length and its CRC
            pos += 12 + length + 4  # then the record's CRC
            event = event_pb2.Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                starts.append(event.step)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        assert pos == len(data), f"{path} ends inside a record"
    return scalars, starts


def test_tensorboard_scalars_read_back(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write(1, {"train/success_rate": 0.25, "loss/loss": 1.5, "rows/padded_shape": "8x64", "eval/x": None})
    writer.write(2, {"train/success_rate": 0.5, "loss/loss": 1.25})
    writer.close()
    scalars, _ = read_event_scalars(str(tmp_path / "tensorboard"))
    assert scalars == {"train/success_rate": [(1, 0.25), (2, 0.5)], "loss/loss": [(1, 1.5), (2, 1.25)]}
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[0]["rows/padded_shape"] == "8x64"


def test_resume_purges_tensorboard_steps_after_the_checkpoint(tmp_path):
    first = MetricsWriter(str(tmp_path), tensorboard=True)
    for it in (1, 2, 3):
        first.write(it, {"loss/loss": float(it)})
    first.close()
    resumed = MetricsWriter(str(tmp_path), tensorboard=True)
    resumed.truncate_after(2)  # the checkpoint was at iteration 2
    resumed.write(3, {"loss/loss": 30.0})
    resumed.close()
    scalars, starts = read_event_scalars(str(tmp_path / "tensorboard"))
    # TensorBoard discards the earlier step-3 point when it reads the purge record at step 3.
    assert starts == [3] and scalars["loss/loss"][-1] == (3, 30.0)
    assert [json.loads(line)["iteration"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_tensorboard_off_writes_no_events(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write(1, {"loss/loss": 1.0})
    writer.close()
    assert not os.path.exists(tmp_path / "tensorboard")


def test_wandb_logs_numeric_metrics_and_resumes_the_same_run(tmp_path, monkeypatch):
    calls: list[tuple] = []

    class FakeRun:
        def log(self, data, step):
            calls.append(("log", dict(data), step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.util = types.SimpleNamespace(generate_id=lambda: "run123")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for _ in range(2):  # a second writer in the same workdir continues the same W&B run
        writer = MetricsWriter(str(tmp_path), wandb=True, wandb_project="p", wandb_mode="offline",
                               run_config={"method": "grpo"})
        writer.write(4, {"loss/loss": 2.0, "rows/padded_shape": "8x64"})
        writer.close()
    inits = [c[1] for c in calls if c[0] == "init"]
    assert [i["id"] for i in inits] == ["run123", "run123"] and inits[0]["resume"] == "allow"
    assert inits[0]["config"] == {"method": "grpo"} and inits[0]["name"] == tmp_path.name
    assert ("log", {"loss/loss": 2.0}, 4) in calls and calls.count(("finish",)) == 2


def test_wandb_asked_for_but_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    with pytest.raises(ValueError, match="pip install wandb"):
        MetricsWriter(str(tmp_path), wandb=True)
    with pytest.raises(ValueError, match="wandb_mode"):
        MetricsWriter(str(tmp_path), wandb=True, wandb_mode="sometimes")
