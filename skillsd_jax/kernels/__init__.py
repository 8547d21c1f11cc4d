"""Hand-written CPU kernels for the parts of the sampler's step that XLA:CPU's own lowering runs far
below the machine's rates (every chunk's attention to the KV cache, a decode step's matrix products),
built on first use with the system C++ compiler and called as XLA FFI custom calls."""

from skillsd_jax.kernels.calls import QUERY_HEADS_PER_KV_HEAD, decode_attention, prefill_attention, rows_matmul
from skillsd_jax.kernels.cpu_build import KernelUnavailable, decode_kernel_available, register_cpu_kernels

__all__ = ["QUERY_HEADS_PER_KV_HEAD", "KernelUnavailable", "decode_attention", "decode_kernel_available",
           "prefill_attention", "register_cpu_kernels", "rows_matmul"]
