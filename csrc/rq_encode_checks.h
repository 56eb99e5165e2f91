// Argument checks shared by every rq_encode kernel (CPU, CUDA, Meta).
#pragma once
#include <ATen/ATen.h>

namespace genrec {

inline void check_rq_encode_args(const at::Tensor& x, const at::Tensor& codebooks) {
  TORCH_CHECK(x.dim() == 2, "rq_encode: x must be 2-D [N, D], got shape ", x.sizes());
  TORCH_CHECK(codebooks.dim() == 3, "rq_encode: codebooks must be 3-D [L, K, D], got shape ",
              codebooks.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "rq_encode: x must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(codebooks.scalar_type() == dtype, "rq_encode: codebooks dtype (", codebooks.scalar_type(),
              ") must match x dtype (", dtype, ")");
  TORCH_CHECK(x.sym_size(1) == codebooks.sym_size(2), "rq_encode: x has D=", x.sym_size(1),
              " but codebooks have D=", codebooks.sym_size(2));
  TORCH_CHECK(codebooks.sym_size(0) > 0 && codebooks.sym_size(1) > 0 && codebooks.sym_size(2) > 0,
              "rq_encode: codebooks must be non-empty, got shape ", codebooks.sym_sizes());
  TORCH_CHECK(x.device() == codebooks.device(), "rq_encode: x is on ", x.device(),
              " but codebooks are on ", codebooks.device());
}

inline void check_rq_encode_out(const at::Tensor& x, const at::Tensor& codebooks, const at::Tensor& out) {
  check_rq_encode_args(x, codebooks);
  TORCH_CHECK(out.scalar_type() == at::kLong, "rq_encode: out must be int64, got ", out.scalar_type());
  TORCH_CHECK(out.dim() == 2 && out.sym_size(0) == x.sym_size(0) && out.sym_size(1) == codebooks.sym_size(0),
              "rq_encode: out must have shape [N, L] = [", x.sym_size(0), ", ", codebooks.sym_size(0),
              "], got ", out.sym_sizes());
  TORCH_CHECK(out.device() == x.device(), "rq_encode: out is on ", out.device(), " but x is on ", x.device());
  TORCH_CHECK(out.is_contiguous(), "rq_encode: out must be contiguous");
}

}  // namespace genrec
