// Candidate keys of constrained_beam_step, shared by the CPU and CUDA kernels.
//
// A candidate's score maps to an unsigned 32-bit "order key" that compares like the float
// (larger key = larger score). Invalid candidates (not in the trie, masked, NaN or -inf
// score) get key 0, below every valid one. -0.0 is folded into +0.0 first, so scores that
// compare equal as floats get equal keys and fall to the tie rule (parent, then token).
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define GENREC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GENREC_HOST_DEVICE inline
#endif

namespace genrec {

GENREC_HOST_DEVICE uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

GENREC_HOST_DEVICE float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// 0 for NaN and -inf; otherwise the order-preserving image of the score (always > 0x007FFFFF).
GENREC_HOST_DEVICE uint32_t score_key(float score) {
  if (!(score > bits_float(0xFF800000u))) return 0u;  // -inf; NaN compares false too
  const uint32_t u = float_bits(score + 0.0f);        // -0.0 + 0.0 == +0.0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

GENREC_HOST_DEVICE float key_score(uint32_t key) {
  return bits_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

}  // namespace genrec
