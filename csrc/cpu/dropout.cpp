// dropout_multiplier on the CPU: the 0 or 1 / (1 - p) factor of each element of a dropout mask.
//
// torch's CPU dropout draws its mask with bernoulli_, a serial generator: ~10 ns an element, a
// third of a training step of genrec's models on two cores. Here element i's draw is output i of
// splitmix64 started at `seed` (Steele, Lea & Flood, OOPSLA 2014), a counter-based generator: any
// element can be computed on its own, so the loop is parallel and vectorizes, and the mask is the
// same for every thread count. Element i is kept where the top 24 bits of its draw are at least
// round(p * 2^24). genrec/ops/reference/dropout.py computes the same bits with torch ops.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../dropout_checks.h"
#include "parallel.h"
#include "vectorize.h"

namespace genrec::cpu {
namespace {

inline uint64_t splitmix64(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr int64_t kBlock = 4096;  // draws per pass: the keep flags stay in L1

// keep[j] = whether element first + j is kept, j < n. Compiled per instruction set
// (GENREC_CPU_CLONES): with AVX-512 the 64-bit multiplies vectorize.
GENREC_CPU_CLONES void draw_keep(uint8_t* keep, int64_t n, uint64_t seed, uint64_t first, uint64_t threshold) {
  for (int64_t j = 0; j < n; ++j) {
    keep[j] = (splitmix64(seed, first + static_cast<uint64_t>(j)) >> 40) >= threshold;
  }
}

// dst[j] = keep_value where flags[j], else 0 (restrict: the flags, bytes, may not alias dst).
template <typename T>
void select_multipliers(T* __restrict dst, const uint8_t* __restrict flags, int64_t n, T keep_value, T zero) {
  for (int64_t j = 0; j < n; ++j) dst[j] = flags[j] ? keep_value : zero;
}

at::Tensor dropout_multiplier_cpu(const at::Tensor& like, int64_t seed, double p) {
  check_dropout_args(like, p);
  at::Tensor out = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t n = out.numel();
  const uint64_t threshold = dropout_threshold(p);
  const auto useed = static_cast<uint64_t>(seed);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "dropout_multiplier", [&] {
    const auto keep = static_cast<scalar_t>(1.0 / (1.0 - p));
    const auto drop = static_cast<scalar_t>(0);
    scalar_t* data = out.data_ptr<scalar_t>();
    parallel_chunks(n, 1 << 16, [&](int64_t begin, int64_t end) {
      uint8_t flags[kBlock];
      for (int64_t lo = begin; lo < end; lo += kBlock) {
        const int64_t len = std::min(kBlock, end - lo);
        draw_keep(flags, len, useed, static_cast<uint64_t>(lo), threshold);
        if constexpr (sizeof(scalar_t) == 2) {  // bf16 / fp16: their bit patterns, as plain integers
          uint16_t keep_bits, zero_bits;
          std::memcpy(&keep_bits, &keep, 2);
          std::memcpy(&zero_bits, &drop, 2);
          select_multipliers(reinterpret_cast<uint16_t*>(data + lo), flags, len, keep_bits, zero_bits);
        } else {
          select_multipliers(data + lo, flags, len, keep, drop);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CPU, m) { m.impl("dropout_multiplier", &dropout_multiplier_cpu); }

// The multipliers do not depend on the values of `like` (only its shape and type): no gradient
// flows through them, whether or not `like` requires one.
TORCH_LIBRARY_IMPL(genrec, Autograd, m) {
  m.impl("dropout_multiplier", torch::CppFunction::makeFallthrough());
}

}  // namespace genrec::cpu
