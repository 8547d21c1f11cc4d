"""Hand-written CPU kernels that XLA:CPU's own lowering runs far below the memory's rate, built on
first use with the system C++ compiler and called as XLA FFI custom calls."""

from skillsd_jax.kernels.cpu_build import (QUERY_HEADS_PER_KV_HEAD, KernelUnavailable, decode_kernel_available,
                                           segment_decode_attention, segment_kernel_target)

__all__ = ["QUERY_HEADS_PER_KV_HEAD", "KernelUnavailable", "decode_kernel_available", "segment_decode_attention",
           "segment_kernel_target"]
