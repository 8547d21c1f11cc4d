// A decode step's matrix products for XLA:CPU (an FFI custom call): out[M, N] = x[M, K] @ w[K, N]
// for the few rows M a device decodes (one token per row), w row-major as the model stores it.
//
// XLA:CPU hands these products to a library that packs w into its own tiled layout at every call
// (the weights are arguments, not constants): for a handful of rows that packing costs more than
// the product. Here w is read once, in place: a block of output columns is kept in registers for up
// to eight rows while w's rows stream through it, each loaded vector feeding eight multiply-adds.
// The block walks down w's rows (one short piece of each), a pattern the hardware prefetcher does not
// follow, so the kernel requests the pieces two blocks to the right, eight rows ahead, itself: from
// main memory that reads w at ~19 GB/s on one core of the machine it was tuned on, 6 without.
#include <algorithm>
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Sixteen floats as one value (one AVX-512 register, two AVX ones, four SSE ones); aligned(4) lets it
// load from any float address.
typedef float vf16 __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kLanes = 16;
constexpr int kRowBlock = 8;
constexpr int64_t kPrefetchRows = 8;

// out[0:MB, 0:NV*16] of a block whose w columns start at `w` (row stride N), x rows at stride K.
template <int MB, int NV>
static inline void Block(const float* x, int64_t K, const float* w, int64_t N, float* out) {
  vf16 acc[MB][NV];
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = vf16{};
  for (int64_t k = 0; k < K; ++k) {
    const float* wr = w + k * N;
    for (int v = 0; v < NV; ++v) __builtin_prefetch(wr + kPrefetchRows * N + 2 * NV * kLanes + kLanes * v, 0, 1);
    vf16 wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = *reinterpret_cast<const vf16*>(wr + kLanes * v);
    for (int m = 0; m < MB; ++m) {
      const float xm = x[m * K + k];
      for (int v = 0; v < NV; ++v) acc[m][v] += xm * wv[v];
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<vf16*>(out + m * N + kLanes * v) = acc[m][v];
}

// Rows [0, MB) of the product: column blocks of NV vectors (as many accumulators as the registers
// hold next to the loaded w vectors), then single vectors, then a scalar tail for N not a multiple of 16.
template <int MB>
static void RowBlock(const float* x, int64_t K, const float* w, int64_t N, float* out) {
  constexpr int NV = MB <= 4 ? 4 : 3;
  int64_t n = 0;
  for (; n + kLanes * NV <= N; n += kLanes * NV) Block<MB, NV>(x, K, w + n, N, out + n);
  for (; n + kLanes <= N; n += kLanes) Block<MB, 1>(x, K, w + n, N, out + n);
  for (; n < N; ++n) {
    for (int m = 0; m < MB; ++m) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * w[k * N + n];
      out[m * N + n] = s;
    }
  }
}

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
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* op = out->typed_data();
  for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
    const float* xb = xp + m0 * K;
    float* ob = op + m0 * N;
    switch (std::min<int64_t>(kRowBlock, M - m0)) {
      case 1: RowBlock<1>(xb, K, wp, N, ob); break;
      case 2: RowBlock<2>(xb, K, wp, N, ob); break;
      case 3: RowBlock<3>(xb, K, wp, N, ob); break;
      case 4: RowBlock<4>(xb, K, wp, N, ob); break;
      case 5: RowBlock<5>(xb, K, wp, N, ob); break;
      case 6: RowBlock<6>(xb, K, wp, N, ob); break;
      case 7: RowBlock<7>(xb, K, wp, N, ob); break;
      default: RowBlock<8>(xb, K, wp, N, ob); break;
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SkillsdRowsMatmul, RowsMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
