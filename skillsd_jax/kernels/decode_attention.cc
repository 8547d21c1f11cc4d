// One decode step's attention for one layer, for XLA:CPU (an FFI custom call).
//
// Each row's single query (G query heads per kv head) against the shared prefix's keys [K, Dh, P] /
// values [K, P, Dh] and its own cache segments' keys [K, Dh, S] / values [K, S, Dh], slots 0..q_slot[b]
// only: a softmax over all of them, merged block by block as kv_cache.segment_part's pieces are (to
// float rounding). Only the visible slots are read, each key and value once: the XLA products of 2
// query rows with a 64-deep contraction read the cache at a fraction of the memory's rate on CPU and
// read a segment's empty tail too, and one call per layer replaces the per-segment skips and merges
// (a few hundred small operations a decode step).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cache_args.h"
#include "cpu_vectors.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

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
                     const float* next_keys, int64_t next_n, int64_t next_stride) {
  // The next head's key rows [Dh][S] (their first next_n slots) fetched while the values stream.
  for (int64_t d = 0; d < D && next_keys; ++d)
    for (int64_t f = 0; f < next_n; f += 16) __builtin_prefetch(next_keys + d * next_stride + f);
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
  if (d0 < D) {  // the dims past the last 64-block (all of them at a 32-wide head): the shared product
    rows_product::Product(p, S, G, n, vb + d0, D, D - d0, acc + d0, D, false);
  }
}

template <int G>
static void OneHead(const float* qs, const float* kb, const float* vb, int64_t D, int64_t S, int64_t n,
                    float scale, float* scores, float* m, float* l, float* acc, const float* next_keys,
                    int64_t next_n, int64_t next_stride) {
  Scores<G>(qs, kb, D, S, n, scores, vb, n * D);
  for (int g = 0; g < G; ++g) SoftmaxPieces(scores + g * S, n, scale, m + g, l + g);
  Weighted<G>(scores, vb, D, S, n, acc, next_keys, next_n, next_stride);
}

// One block of keys [Dh][stride] / values [stride][Dh] of which the first n slots are visible.
struct KeyBlock {
  const float* keys;
  const float* values;
  int64_t stride;
  int64_t n;
};

// Softmax over all blocks of one row's kv head (the shared prefix, then the row's segments in order),
// merged as the XLA path merges its segment pieces; writes the normalized output of the G query heads.
template <int G>
static void AttendRowHead(const float* qs, const KeyBlock* blocks, int64_t num_blocks, const KeyBlock* next,
                          int64_t D, float scale, float* scores, float* piece, float* out) {
  float m[G], l[G], bm[G], bl[G];
  for (int g = 0; g < G; ++g) { m[g] = -FLT_MAX; l[g] = 0.0f; }
  std::fill(out, out + G * D, 0.0f);
  for (int64_t i = 0; i < num_blocks; ++i) {
    const KeyBlock& blk = blocks[i];
    const KeyBlock* after = i + 1 < num_blocks ? &blocks[i + 1] : next;
    OneHead<G>(qs, blk.keys, blk.values, D, blk.stride, blk.n, scale, scores, bm, bl, piece,
               after ? after->keys : nullptr, after ? after->n : 0, after ? after->stride : 0);
    for (int g = 0; g < G; ++g) {
      const float mx = std::max(m[g], bm[g]);
      const float c_old = std::exp(m[g] - mx), c_new = std::exp(bm[g] - mx);
      l[g] = l[g] * c_old + bl[g] * c_new;
      float* o = out + g * D;
      const float* a = piece + g * D;
      for (int64_t d = 0; d < D; ++d) o[d] = o[d] * c_old + a[d] * c_new;
      m[g] = mx;
    }
  }
  for (int g = 0; g < G; ++g) {  // every decoding row sees at least its own slot: l >= 1 then
    const float inv = 1.0f / std::max(l[g], 1e-30f);
    for (int64_t d = 0; d < D; ++d) out[g * D + d] *= inv;
  }
}

// Arguments: q [B, K, G, Dh]; q_slot [B] (the slot of each row's new token: slots 0..q_slot visible);
// prefix_length [] (visible slots of the shared prefix); prefix keys [K, Dh, P] and values [K, P, Dh]
// (P may be 0); then the N segments' keys [B, K, Dh, S] each, then their values [B, K, S, Dh] each.
// Result: the attention output [B, K, G, Dh].
static ffi::Error DecodeAttentionImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::S32> q_slot,
                                      ffi::Buffer<ffi::S32> prefix_length, ffi::Buffer<ffi::F32> prefix_keys,
                                      ffi::Buffer<ffi::F32> prefix_values, ffi::RemainingArgs segments,
                                      ffi::ResultBuffer<ffi::F32> out, float scale) {
  auto qd = q.dimensions();  // [B, K, G, Dh]
  auto pk = prefix_keys.dimensions();
  auto pv = prefix_values.dimensions();
  if (qd.size() != 4 || pk.size() != 3 || pv.size() != 3) {
    return ffi::Error::InvalidArgument("decode attention: q must be rank 4, the prefix rank 3");
  }
  const int64_t B = qd[0], K = qd[1], G = qd[2], D = qd[3], P = pk[2];
  if (pk[0] != K || pk[1] != D || pv[0] != K || pv[1] != P || pv[2] != D ||
      q_slot.element_count() != static_cast<size_t>(B) || prefix_length.element_count() != 1) {
    return ffi::Error::InvalidArgument("decode attention: q, q_slot and the prefix disagree");
  }
  if (G != 1 && G != 2 && G != 4 && G != 8) {
    return ffi::Error::InvalidArgument("decode attention: query heads per kv head must be 1, 2, 4 or 8");
  }
  CacheSegments cache;
  if (auto error = ReadSegments(segments, B, K, D, "decode attention", &cache); error.failure()) return error;
  const int64_t N = static_cast<int64_t>(cache.keys.size()), S = cache.slots;
  const float* qp = q.typed_data();
  const int32_t* slot = q_slot.typed_data();
  const int64_t prefix_n = std::min<int64_t>(P, std::max<int64_t>(0, prefix_length.typed_data()[0]));
  float* op = out->typed_data();
  std::vector<float> scores(static_cast<size_t>(G * std::max<int64_t>({S, P, 1})));
  std::vector<float> piece(static_cast<size_t>(G * D));
  // The blocks each (row, kv head) reads, in order; the first block of the next pair is prefetched.
  auto blocks_of = [&](int64_t b, int64_t h, std::vector<KeyBlock>& blocks) {
    blocks.clear();
    if (prefix_n > 0) {
      blocks.push_back({prefix_keys.typed_data() + h * D * P, prefix_values.typed_data() + h * P * D, P, prefix_n});
    }
    const int64_t visible = static_cast<int64_t>(slot[b]) + 1;
    for (int64_t j = 0; j < N && j * S < visible; ++j) {
      const int64_t off = (b * K + h) * D * S;
      blocks.push_back({cache.keys[j] + off, cache.values[j] + off, S, std::min(S, visible - j * S)});
    }
  };
  std::vector<KeyBlock> blocks, next_blocks;
  if (B > 0 && K > 0) blocks_of(0, 0, blocks);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < K; ++h) {
      const int64_t nb = h + 1 < K ? b : b + 1, nh = h + 1 < K ? h + 1 : 0;
      next_blocks.clear();
      if (nb < B) blocks_of(nb, nh, next_blocks);
      const KeyBlock* next = next_blocks.empty() ? nullptr : &next_blocks[0];
      const float* qs = qp + (b * K + h) * G * D;
      float* o = op + (b * K + h) * G * D;
      const int64_t nblk = static_cast<int64_t>(blocks.size());
      switch (G) {
        case 1: AttendRowHead<1>(qs, blocks.data(), nblk, next, D, scale, scores.data(), piece.data(), o); break;
        case 2: AttendRowHead<2>(qs, blocks.data(), nblk, next, D, scale, scores.data(), piece.data(), o); break;
        case 4: AttendRowHead<4>(qs, blocks.data(), nblk, next, D, scale, scores.data(), piece.data(), o); break;
        default: AttendRowHead<8>(qs, blocks.data(), nblk, next, D, scale, scores.data(), piece.data(), o); break;
      }
      std::swap(blocks, next_blocks);
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SkillsdDecodeAttention, DecodeAttentionImpl,
                              AttentionBinding());
