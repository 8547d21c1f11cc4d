"""Builds `decode_attention.cc` into a shared library on first use, registers it with XLA as an FFI
target, and wraps the call.

The library is compiled for this CPU (`-march=native`) into a per-user cache keyed by the source, the
compiler flags, the jaxlib version (its FFI headers) and the CPU model, so a second process (or a run
after a reboot) reuses it and a copy made for another CPU is never loaded. Without a C++ compiler, or
on a failed build, `KernelUnavailable` says why; callers that asked for the kernel get that error.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.cc")
TARGET = "skillsd_segment_decode_attention"
QUERY_HEADS_PER_KV_HEAD = (1, 2, 4, 8)  # the kernel's compiled variants
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")


class KernelUnavailable(RuntimeError):
    """The CPU kernel cannot be built or loaded here (no compiler, a failed build, an unloadable library)."""


def _cache_dir() -> Path:
    root = os.environ.get("SKILLSD_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "skillsd_jax", "kernels")
    return Path(root)


def _cpu_model() -> str:
    """The CPU's model name and instruction-set flags (what `-march=native` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    first = {}
    for line in lines:
        key = line.split(":", 1)[0].strip()
        if key in wanted and key not in first:
            first[key] = line
    return "\n".join(first[k] for k in wanted if k in first) or platform.machine()


def _library_path(compiler: str) -> Path:
    import jaxlib

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(), jaxlib.__version__.encode(),
                 _cpu_model().encode(), platform.machine().encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_dir() / f"decode_attention-{key.hexdigest()[:16]}.so"


def _build(compiler: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed into place: a concurrent process never loads half a file.
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so.tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(tmp_path)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelUnavailable(f"cannot run the C++ compiler {compiler!r}: {e}") from e
        if done.returncode != 0:
            raise KernelUnavailable(f"building {SOURCE.name} failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        os.replace(tmp_path, out)
        log.info("built the CPU decode-attention kernel: %s", out)
    finally:
        tmp_path.unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def segment_kernel_target() -> str:
    """Builds (or finds) and loads the library and registers its target once per process."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler found (set CXX, or install g++) to build the CPU decode kernel")
    path = _library_path(compiler)
    if not path.exists():
        _build(compiler, path)
    try:
        library = ctypes.cdll.LoadLibrary(str(path))
    except OSError as e:
        raise KernelUnavailable(f"cannot load {path}: {e}") from e
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.SkillsdSegmentDecode), platform="cpu")
    return TARGET


def decode_kernel_available() -> bool:
    """Whether the kernel can be used in this process (building it if needed); logs why not."""
    try:
        segment_kernel_target()
        return True
    except KernelUnavailable as e:
        log.warning("CPU decode-attention kernel unavailable: %s", e)
        return False


def segment_decode_attention(q_BxKxGxDh: jax.Array, keys_BxKxDhxS: jax.Array, values_BxKxSxDh: jax.Array,
                             last_slot_B: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One query per row against one cache segment, slots `0..last_slot_B[b]` visible (clipped to the
    segment; < 0: none): the running-softmax pieces (max `[B,K,G,1,1]`, exp-sum `[B,K,G,1,1]`, weighted
    values `[B,K,G,1,Dh]`) of `kv_cache.segment_part` for a one-token chunk, float32 throughout."""
    target = segment_kernel_target()
    b, k, g, dh = q_BxKxGxDh.shape
    if keys_BxKxDhxS.dtype != jnp.float32 or values_BxKxSxDh.dtype != jnp.float32:
        raise ValueError("the CPU decode-attention kernel reads a float32 cache")
    out = (jax.ShapeDtypeStruct((b, k, g), jnp.float32), jax.ShapeDtypeStruct((b, k, g), jnp.float32),
           jax.ShapeDtypeStruct((b, k, g, dh), jnp.float32))
    m, l, acc = jax.ffi.ffi_call(target, out, vmap_method="sequential")(
        q_BxKxGxDh.astype(jnp.float32), keys_BxKxDhxS, values_BxKxSxDh, last_slot_B.astype(jnp.int32),
        scale=np.float32(1.0 / np.sqrt(dh)))
    return m[..., None, None], l[..., None, None], acc[:, :, :, None, :]
