// Meta (fake) kernels: output shapes only, with symbolic sizes so that the ops
// trace under torch.compile with dynamic shapes.
#include <torch/library.h>

#include "rq_encode_checks.h"

namespace genrec {
namespace {

at::Tensor rq_encode_meta(const at::Tensor& x, const at::Tensor& codebooks) {
  check_rq_encode_args(x, codebooks);
  return at::empty_symint({x.sym_size(0), codebooks.sym_size(0)}, x.options().dtype(at::kLong));
}

void rq_encode_out_meta(const at::Tensor& x, const at::Tensor& codebooks, at::Tensor& out) {
  check_rq_encode_out(x, codebooks, out);
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, Meta, m) {
  m.impl("rq_encode", &rq_encode_meta);
  m.impl("rq_encode_out", &rq_encode_out_meta);
}

}  // namespace genrec
