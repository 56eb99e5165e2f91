// Argument checks of dropout_multiplier, shared by the CPU and Meta kernels.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace genrec {

inline void check_dropout_args(const at::Tensor& like, double p) {
  TORCH_CHECK(at::isFloatingType(like.scalar_type()), "dropout_multiplier: like must be a floating-point tensor, got ",
              like.scalar_type());
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_multiplier: p must be in [0, 1), got ", p);
}

// An element is dropped where the top 24 bits of its draw are below this: P(drop) = threshold / 2^24.
inline uint64_t dropout_threshold(double p) { return static_cast<uint64_t>(std::llround(p * 16777216.0)); }

}  // namespace genrec
