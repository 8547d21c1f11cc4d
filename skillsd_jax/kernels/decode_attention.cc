// One decode step's attention to one KV-cache segment, for XLA:CPU (an FFI custom call).
//
// Each row's single query (G query heads per kv head) against its segment's keys [K, Dh, S] and
// values [K, S, Dh], visible slots 0..q_slot[b] only. Returns the running-softmax pieces the caller
// merges across segments: the row max m, the exp-sum l and the exp-weighted values acc, as
// kv_cache.segment_part computes them (to float rounding). Only the visible slots are read, each key and value once: the XLA
// products of 2 query rows with a 64-deep contraction read the cache at a fraction of the memory's
// rate on CPU, and read the segment's empty tail too.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Eight floats as one value (GCC/Clang vector extension: one AVX register, two SSE ones elsewhere);
// aligned(4) lets it load from any float address.
typedef float vf8 __attribute__((vector_size(32), aligned(4)));
constexpr int64_t kLanes = 8;

// Scores of the G query heads against keys [Dh][S] (row stride S), slots [0, n): key row by key row,
// each read front to back (one sequential stream for the prefetcher), the G score rows in L1. While
// they run, `prefetch_floats` floats from `prefetch` (what the next step reads) are requested, spread
// over the rows, so the two reads overlap in memory.
template <int G>
static void Scores(const float* qs, const float* kb, int64_t D, int64_t S, int64_t n, float* scores,
                   const float* prefetch, int64_t prefetch_floats) {
  const int64_t nv = n / kLanes * kLanes;
  const int64_t per_row = (prefetch_floats + D - 1) / D;
  for (int g = 0; g < G; ++g) std::fill(scores + g * S, scores + g * S + n, 0.0f);
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t f = d * per_row; f < std::min(prefetch_floats, (d + 1) * per_row); f += 16)
      __builtin_prefetch(prefetch + f);
    const float* krow = kb + d * S;
    float qv[G];
    for (int g = 0; g < G; ++g) qv[g] = qs[g * D + d];
    for (int64_t s = 0; s < nv; s += kLanes) {
      const vf8 k = *reinterpret_cast<const vf8*>(krow + s);
      for (int g = 0; g < G; ++g) *reinterpret_cast<vf8*>(scores + g * S + s) += qv[g] * k;
    }
    for (int64_t s = nv; s < n; ++s)
      for (int g = 0; g < G; ++g) scores[g * S + s] += qv[g] * krow[s];
  }
}

constexpr int64_t kDimVecs = 8;  // registers of partial sums per query head in the weighted values
constexpr int64_t kDimBlock = kLanes * kDimVecs;

// acc[g][:] = sum over slots [0, n) of p[g][s] * values[s][:] (values [S][Dh]), 64 dims at a time (a
// whole row at the tiny shapes' head size): each value row loaded once, the G x 64 sums in registers.
template <int G>
static void Weighted(const float* p, const float* vb, int64_t D, int64_t S, int64_t n, float* acc,
                     const float* next_keys, int64_t next_n) {
  // The next head's key rows [Dh][S] (their first next_n slots) fetched while the values stream.
  for (int64_t d = 0; d < D && next_keys; ++d)
    for (int64_t f = 0; f < next_n; f += 16) __builtin_prefetch(next_keys + d * S + f);
  int64_t d0 = 0;
  for (; d0 + kDimBlock <= D; d0 += kDimBlock) {
    vf8 a[G][kDimVecs] = {};
    for (int64_t s = 0; s < n; ++s) {
      const vf8* vrow = reinterpret_cast<const vf8*>(vb + s * D + d0);
      vf8 v[kDimVecs];
      for (int64_t j = 0; j < kDimVecs; ++j) v[j] = vrow[j];
      for (int g = 0; g < G; ++g) {
        const float pv = p[g * S + s];
        for (int64_t j = 0; j < kDimVecs; ++j) a[g][j] += pv * v[j];
      }
    }
    for (int g = 0; g < G; ++g)
      for (int64_t j = 0; j < kDimVecs; ++j) *reinterpret_cast<vf8*>(acc + g * D + d0 + j * kLanes) = a[g][j];
  }
  for (int64_t d = d0; d < D; ++d) {  // a head size that is not a multiple of the block
    for (int g = 0; g < G; ++g) {
      float a = 0.0f;
      for (int64_t s = 0; s < n; ++s) a += p[g * S + s] * vb[s * D + d];
      acc[g * D + d] = a;
    }
  }
}

typedef int32_t vi8 __attribute__((vector_size(32)));

// exp(x) for x <= 0, eight lanes: 2^n * e^r with n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its
// degree-6 Taylor polynomial (relative error ~2e-7); below -87 (where float exp underflows) 0.
static inline vf8 ExpNonPositive(vf8 x) {
  const vf8 floor_x = x * 0.0f - 87.0f;
  const vi8 under = x < floor_x;
  x = under ? floor_x : x;
  const vi8 n = __builtin_convertvector(x * 1.44269504f - 0.5f, vi8);  // truncation = rounding for x <= 0
  const vf8 nf = __builtin_convertvector(n, vf8);
  const vf8 r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // x - n ln 2 in two parts
  vf8 e = r * (1.0f / 720) + (1.0f / 120);
  e = e * r + (1.0f / 24);
  e = e * r + (1.0f / 6);
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  const vi8 bits = (n + 127) << 23;
  const vf8 two_n = reinterpret_cast<const vf8&>(bits);
  const vf8 zero = x * 0.0f;
  return under ? zero : e * two_n;
}

// Scales the scores of one query head over slots [0, n) and turns them into exp(score - max):
// returns (max, sum of the exps).
static inline void SoftmaxPieces(float* sg, int64_t n, float scale, float* m_out, float* l_out) {
  float mx = -FLT_MAX;
  int64_t s = 0;
  if (n >= kLanes) {
    vf8 vmax = *reinterpret_cast<const vf8*>(sg) * scale;
    for (; s + kLanes <= n; s += kLanes) {
      vf8* p = reinterpret_cast<vf8*>(sg + s);
      *p = *p * scale;
      vmax = *p > vmax ? *p : vmax;
    }
    for (int j = 0; j < kLanes; ++j) mx = std::max(mx, vmax[j]);
  }
  for (; s < n; ++s) { sg[s] *= scale; mx = std::max(mx, sg[s]); }
  float sum = 0.0f;
  vf8 vsum = {};
  s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    vf8* p = reinterpret_cast<vf8*>(sg + s);
    *p = ExpNonPositive(*p - mx);
    vsum += *p;
  }
  for (int j = 0; j < kLanes; ++j) sum += vsum[j];
  for (; s < n; ++s) { sg[s] = std::exp(sg[s] - mx); sum += sg[s]; }
  *m_out = mx;
  *l_out = sum;
}

template <int G>
static void OneHead(const float* qs, const float* kb, const float* vb, int64_t D, int64_t S, int64_t n,
                    float scale, float* scores, float* m, float* l, float* acc, const float* next_keys,
                    int64_t next_n) {
  Scores<G>(qs, kb, D, S, n, scores, vb, n * D);
  for (int g = 0; g < G; ++g) SoftmaxPieces(scores + g * S, n, scale, m + g, l + g);
  Weighted<G>(scores, vb, D, S, n, acc, next_keys, next_n);
}

static ffi::Error SegmentDecodeImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> keys,
                                    ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> q_slot,
                                    ffi::ResultBuffer<ffi::F32> m_out, ffi::ResultBuffer<ffi::F32> l_out,
                                    ffi::ResultBuffer<ffi::F32> acc_out, float scale) {
  auto qd = q.dimensions();       // [B, K, G, Dh]
  auto kd = keys.dimensions();    // [B, K, Dh, S]
  auto vd = values.dimensions();  // [B, K, S, Dh]
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4) {
    return ffi::Error::InvalidArgument("segment decode attention: q, keys and values must be rank 4");
  }
  const int64_t B = qd[0], K = qd[1], G = qd[2], D = qd[3], S = kd[3];
  if (kd[0] != B || kd[1] != K || kd[2] != D || vd[0] != B || vd[1] != K || vd[2] != S || vd[3] != D ||
      q_slot.element_count() != static_cast<size_t>(B)) {
    return ffi::Error::InvalidArgument("segment decode attention: shapes disagree");
  }
  if (G != 1 && G != 2 && G != 4 && G != 8) {
    return ffi::Error::InvalidArgument("segment decode attention: query heads per kv head must be 1, 2, 4 or 8");
  }
  const float* qp = q.typed_data();
  const float* kp = keys.typed_data();
  const float* vp = values.typed_data();
  const int32_t* slot = q_slot.typed_data();
  float* m = m_out->typed_data();
  float* l = l_out->typed_data();
  float* acc = acc_out->typed_data();
  std::vector<float> scores(static_cast<size_t>(G * S));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(slot[b]) + 1));
    for (int64_t h = 0; h < K; ++h) {
      const int64_t bh = b * K + h;
      float* mb = m + bh * G;
      float* lb = l + bh * G;
      float* ab = acc + bh * G * D;
      if (n == 0) {  // nothing visible: the pieces of a fully masked block
        std::fill(ab, ab + G * D, 0.0f);
        for (int64_t g = 0; g < G; ++g) { mb[g] = -FLT_MAX; lb[g] = 0.0f; }
        continue;
      }
      const float* qs = qp + bh * G * D;
      const float* kb = kp + bh * D * S;
      const float* vb = vp + bh * S * D;
      const int64_t nb = h + 1 < K ? b : b + 1;  // the next head's row
      const int64_t next_n = nb < B ? std::min<int64_t>(S, std::max<int64_t>(0, static_cast<int64_t>(slot[nb]) + 1)) : 0;
      const float* next_keys = next_n > 0 ? kp + (bh + 1) * D * S : nullptr;
      switch (G) {
        case 1: OneHead<1>(qs, kb, vb, D, S, n, scale, scores.data(), mb, lb, ab, next_keys, next_n); break;
        case 2: OneHead<2>(qs, kb, vb, D, S, n, scale, scores.data(), mb, lb, ab, next_keys, next_n); break;
        case 4: OneHead<4>(qs, kb, vb, D, S, n, scale, scores.data(), mb, lb, ab, next_keys, next_n); break;
        default: OneHead<8>(qs, kb, vb, D, S, n, scale, scores.data(), mb, lb, ab, next_keys, next_n); break;
      }
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SkillsdSegmentDecode, SegmentDecodeImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));
