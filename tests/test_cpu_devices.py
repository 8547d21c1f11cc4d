"""`cpu_devices`: splitting the host CPU into several XLA devices before JAX starts."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from skillsd_jax.sharding import split_cpu_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_split_before_start_gives_that_many_devices():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the test session forces its own count
    code = ("from skillsd_jax.sharding import split_cpu_devices; import jax; "
            "print(split_cpu_devices(3), len(jax.devices('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3"]


def test_split_after_start_is_a_no_op_at_the_same_count_and_an_error_otherwise():
    started = len(jax.devices("cpu"))
    assert split_cpu_devices(started) == started
    with pytest.raises(RuntimeError, match="already started"):
        split_cpu_devices(started + 1)
    with pytest.raises(ValueError, match=">= 0"):
        split_cpu_devices(-1)
