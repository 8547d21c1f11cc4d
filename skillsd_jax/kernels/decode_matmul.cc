// A decode step's matrix products for XLA:CPU (an FFI custom call): out[M, N] = x[M, K] @ w[K, N]
// for the few rows M a device decodes (one token per row), w row-major as the model stores it.
//
// XLA:CPU hands these products to a library that packs w into its own tiled layout at every call
// (the weights are arguments, not constants): for a handful of rows that packing costs more than the
// product. Here w is read once, in place (`rows_product::Product`, cpu_vectors.h).
#include <cstdint>

#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static ffi::Error RowsMatmulImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out) {
  auto xd = x.dimensions();  // [M, K]
  auto wd = w.dimensions();  // [K, N]
  auto od = out->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || od.size() != 2) {
    return ffi::Error::InvalidArgument("decode matmul: x, w and out must be rank 2");
  }
  const int64_t M = xd[0], K = xd[1], N = wd[1];
  if (wd[0] != K || od[0] != M || od[1] != N) {
    return ffi::Error::InvalidArgument("decode matmul: shapes disagree");
  }
  rows_product::Product(x.typed_data(), K, M, K, w.typed_data(), N, N, out->typed_data(), N, false);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SkillsdRowsMatmul, RowsMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
