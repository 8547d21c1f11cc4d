"""Builds the CPU kernels (`decode_attention.cc`, `prefill_attention.cc`, `decode_matmul.cc` and their
headers) into one shared library on first use and registers them with XLA as FFI targets (the calls
are wrapped in `calls.py`).

The library is compiled for this CPU (`-march=native`) into a per-user cache keyed by the sources, the
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

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
SOURCES = (_HERE / "decode_attention.cc", _HERE / "decode_matmul.cc", _HERE / "prefill_attention.cc")
HEADERS = (_HERE / "cpu_vectors.h", _HERE / "cache_args.h")
# FFI target name -> the handler symbol the library exports.
TARGETS = {"skillsd_decode_attention": "SkillsdDecodeAttention", "skillsd_rows_matmul": "SkillsdRowsMatmul",
           "skillsd_prefill_attention": "SkillsdPrefillAttention"}
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
    sources = (src.read_bytes() for src in SOURCES + HEADERS)
    for part in (*sources, " ".join(FLAGS).encode(), compiler.encode(), jaxlib.__version__.encode(),
                 _cpu_model().encode(), platform.machine().encode()):
        key.update(part)
        key.update(b"\0")
    return _cache_dir() / f"cpu_kernels-{key.hexdigest()[:16]}.so"


def _build(compiler: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed into place: a concurrent process never loads half a file.
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so.tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{_HERE}", *map(str, SOURCES), "-o",
               str(tmp_path)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelUnavailable(f"cannot run the C++ compiler {compiler!r}: {e}") from e
        if done.returncode != 0:
            names = ", ".join(src.name for src in SOURCES)
            raise KernelUnavailable(f"building {names} failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        os.replace(tmp_path, out)
        log.info("built the CPU decode kernels: %s", out)
    finally:
        tmp_path.unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def register_cpu_kernels() -> tuple[str, ...]:
    """Builds (or finds) and loads the library and registers its targets once per process; returns their names."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler found (set CXX, or install g++) to build the CPU decode kernels")
    path = _library_path(compiler)
    if not path.exists():
        _build(compiler, path)
    try:
        library = ctypes.cdll.LoadLibrary(str(path))
    except OSError as e:
        raise KernelUnavailable(f"cannot load {path}: {e}") from e
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return tuple(TARGETS)


def decode_kernel_available() -> bool:
    """Whether the kernels can be used in this process (building them if needed); logs why not."""
    try:
        register_cpu_kernels()
        return True
    except KernelUnavailable as e:
        log.warning("CPU decode kernels unavailable: %s", e)
        return False
