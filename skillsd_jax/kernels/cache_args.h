// The arguments the attention kernels share: q, each query's slot, the shared prefix (its visible
// length, keys [K, Dh, P], values [K, P, Dh]), then N segments' keys [B, K, Dh, S] each and their
// values [B, K, S, Dh] each as the call's remaining arguments; the result; the softmax scale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

struct CacheSegments {
  std::vector<const float*> keys, values;
  int64_t slots = 0;  // S, slots of one segment
};

// Checks the segments against q's B, K and Dh (and one another) and collects their data; `what` names
// the kernel in the error.
static inline xla::ffi::Error ReadSegments(xla::ffi::RemainingArgs args, int64_t B, int64_t K, int64_t D,
                                           const char* what, CacheSegments* out) {
  namespace ffi = xla::ffi;
  if (args.size() == 0 || args.size() % 2 != 0) {
    return ffi::Error::InvalidArgument(std::string(what) + ": needs segments' keys and values in pairs");
  }
  const int64_t N = static_cast<int64_t>(args.size() / 2);
  out->keys.resize(N);
  out->values.resize(N);
  for (int64_t j = 0; j < N; ++j) {
    auto k = args.get<ffi::Buffer<ffi::F32>>(j);
    auto v = args.get<ffi::Buffer<ffi::F32>>(N + j);
    if (k.has_error() || v.has_error()) {
      return ffi::Error::InvalidArgument(std::string(what) + ": segments must be float32");
    }
    auto kd = k->dimensions(), vd = v->dimensions();
    if (j == 0) out->slots = kd.size() == 4 ? kd[3] : -1;
    const int64_t S = out->slots;
    if (kd.size() != 4 || vd.size() != 4 || kd[0] != B || kd[1] != K || kd[2] != D || kd[3] != S || vd[0] != B ||
        vd[1] != K || vd[2] != S || vd[3] != D) {
      return ffi::Error::InvalidArgument(std::string(what) + ": a segment's shape disagrees with q or the others");
    }
    out->keys[j] = k->typed_data();
    out->values[j] = v->typed_data();
  }
  return ffi::Error::Success();
}

// The FFI binding of those arguments: q (float32), q_slot (int32), prefix_length (int32), prefix keys,
// prefix values, the segments; one float32 result; the `scale` attribute.
static inline auto AttentionBinding() {
  namespace ffi = xla::ffi;
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::S32>>()
      .Arg<ffi::Buffer<ffi::S32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .RemainingArgs()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<float>("scale");
}
