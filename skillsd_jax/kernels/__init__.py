"""Hand-written CPU kernels for the parts of a decode step that XLA:CPU's own lowering runs far below
the machine's rates, built on first use with the system C++ compiler and called as XLA FFI custom calls."""

from skillsd_jax.kernels.cpu_build import (QUERY_HEADS_PER_KV_HEAD, KernelUnavailable, decode_attention,
                                           decode_kernel_available, prefill_attention, register_cpu_kernels,
                                           rows_matmul)

__all__ = ["QUERY_HEADS_PER_KV_HEAD", "KernelUnavailable", "decode_attention", "decode_kernel_available",
           "prefill_attention", "register_cpu_kernels", "rows_matmul"]
