"""The CPU decode-attention kernel against the XLA segment step it replaces, and its build errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillsd_jax import kernels
from skillsd_jax.kernels import cpu_build
from skillsd_jax.models.kv_cache import segment_part


@pytest.fixture(scope="module")
def built():
    if not kernels.decode_kernel_available():
        pytest.skip("no C++ compiler here to build the CPU decode kernel")


# Head sizes off the 8-lane and 64-dim blocks, slots off the 8-lane block, G = 1, 2, 4 and 8.
@pytest.mark.parametrize("g,dh,slots", [(2, 64, 256), (1, 8, 16), (4, 36, 21), (8, 72, 40)])
def test_kernel_equals_the_xla_segment_step(built, g, dh, slots):
    rng = np.random.default_rng(g * 1000 + dh)
    b, kh = 6, 2
    q = jnp.asarray(rng.normal(size=(b, kh, g, 1, dh)), jnp.float32)
    keys = jnp.asarray(rng.normal(size=(b, kh, dh, slots)), jnp.float32)
    values = jnp.asarray(rng.normal(size=(b, kh, slots, dh)), jnp.float32)
    # Rows that see nothing, one slot, part of the segment, all of it, and past its end.
    last = jnp.asarray([-1, 0, slots // 3, slots - 2, slots - 1, slots + 7], jnp.int32)
    mask = jnp.broadcast_to((jnp.arange(slots)[None, :] <= last[:, None])[:, None, None, :], (b, g, 1, slots))
    want = jax.jit(segment_part)(q, keys, values, mask)
    got = jax.jit(kernels.segment_decode_attention)(q[:, :, :, 0], keys, values, last)
    for name, w, x in zip(("max", "exp-sum", "weighted values"), want, got):
        assert x.shape == w.shape, name
        np.testing.assert_allclose(np.asarray(x), np.asarray(w), rtol=2e-5, atol=2e-5, err_msg=name)
    # The row that sees nothing carries the pieces of a fully masked block.
    assert float(got[0][0].min()) == float(jnp.finfo(jnp.float32).min) and float(jnp.abs(got[1][0]).max()) == 0.0


def test_kernel_reads_only_visible_slots(built):
    """Garbage (NaN) past a row's last visible slot must not reach its result: the kernel never reads it."""
    rng = np.random.default_rng(3)
    b, kh, g, dh, slots = 2, 1, 2, 16, 32
    keys = rng.normal(size=(b, kh, dh, slots)).astype(np.float32)
    values = rng.normal(size=(b, kh, slots, dh)).astype(np.float32)
    keys[:, :, :, 10:] = np.nan
    values[:, :, 10:, :] = np.nan
    q = jnp.asarray(rng.normal(size=(b, kh, g, dh)), jnp.float32)
    m, l, acc = kernels.segment_decode_attention(q, jnp.asarray(keys), jnp.asarray(values),
                                                 jnp.asarray([9, 4], jnp.int32))
    assert np.isfinite(np.asarray(acc)).all() and np.isfinite(np.asarray(l)).all()
    scores = np.einsum("kgd,kds->kgs", np.asarray(q[1]), keys[1, :, :, :5]) / math.sqrt(dh)
    np.testing.assert_allclose(np.asarray(m)[1, :, :, 0, 0], scores.max(-1), rtol=1e-5)


@pytest.mark.parametrize("compiler,error", [("no-such-compiler", "cannot run the C\\+\\+ compiler"),
                                            ("/bin/false", "building decode_attention.cc failed")])
def test_build_failures_are_clear_errors(monkeypatch, tmp_path, compiler, error):
    monkeypatch.setenv("CXX", compiler if compiler.startswith("/") else str(tmp_path / compiler))
    monkeypatch.setenv("SKILLSD_KERNEL_CACHE", str(tmp_path / "cache"))
    cpu_build.segment_kernel_target.cache_clear()
    try:
        with pytest.raises(kernels.KernelUnavailable, match=error):
            cpu_build.segment_kernel_target()
        assert not kernels.decode_kernel_available()
        assert not list((tmp_path / "cache").glob("*.so*"))  # no half-built library left behind
    finally:
        cpu_build.segment_kernel_target.cache_clear()
