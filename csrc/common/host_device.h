// Qualifiers and small arithmetic shared by the CPU (.cpp) and CUDA (.cu) kernels.
//
// The headers in csrc/common/ hold the math both backends must agree on (sampling rules, RoI
// geometry). They use no libm call and no std:: algorithm, so one definition compiles for the
// host and, under nvcc, for the device.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DCN_HD __host__ __device__ __forceinline__
#else
#define DCN_HD inline
#endif

namespace dcn_det {

DCN_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
DCN_HD T clamp_to(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// floor(v) for v >= -1 without libm (std::floor is a call on the baseline x86-64 target, which
// has no SSE4.1): truncate toward zero, then step down for negative non-integers.
template <typename T>
DCN_HD int64_t floor_from_minus_one(T v) {
  const int64_t i = static_cast<int64_t>(v);
  return i - (static_cast<T>(i) > v ? 1 : 0);
}

}  // namespace dcn_det
