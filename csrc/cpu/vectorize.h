// Portable SIMD helpers for the CPU kernels.
//
// The hot loops are written with GCC/Clang vector extensions on 16-float
// vectors and compiled several times (AVX-512, AVX2+FMA, baseline) through
// target_clones; the loader picks the best clone for the running CPU, so one
// binary is fast on new machines and still runs on old ones.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__APPLE__)
#define GENREC_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GENREC_CPU_CLONES
#endif

namespace genrec::cpu {

constexpr int kLanes = 16;
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));

__attribute__((always_inline)) inline vfloat load_vf(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline vfloat splat_vf(float s) { return vfloat{} + s; }

__attribute__((always_inline)) inline vint iota_vi(int32_t start) {
  vint v;
  for (int i = 0; i < kLanes; ++i) v[i] = start + i;
  return v;
}

__attribute__((always_inline)) inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace genrec::cpu
