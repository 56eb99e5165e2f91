// Meta (fake) kernels: output shapes only, with symbolic sizes so that the ops
// trace under torch.compile with dynamic shapes.
#include <torch/library.h>

#include "beam_step_checks.h"
#include "dropout_checks.h"
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> constrained_beam_step_meta(
    const at::Tensor& logits, const at::Tensor& beam_scores, const at::Tensor& states, const at::Tensor& row_ptr,
    const at::Tensor& child_tokens, const std::optional<at::Tensor>& dense,
    const std::optional<at::Tensor>& mask_offsets, const std::optional<at::Tensor>& mask_nodes,
    const std::optional<at::Tensor>& mask_allow, int64_t beam_size) {
  check_beam_step_args(logits, beam_scores, states, row_ptr, child_tokens, dense, mask_offsets, mask_nodes,
                       mask_allow, beam_size);
  const std::vector<c10::SymInt> shape{logits.sym_size(0), c10::SymInt(beam_size)};
  const auto opts = logits.options();
  return {at::empty_symint(shape, opts.dtype(at::kLong)), at::empty_symint(shape, opts.dtype(at::kLong)),
          at::empty_symint(shape, opts.dtype(at::kFloat)), at::empty_symint(shape, opts.dtype(at::kInt))};
}

void constrained_beam_step_out_meta(const at::Tensor& logits, const at::Tensor& beam_scores, const at::Tensor& states,
                                    const at::Tensor& row_ptr, const at::Tensor& child_tokens,
                                    const std::optional<at::Tensor>& dense,
                                    const std::optional<at::Tensor>& mask_offsets,
                                    const std::optional<at::Tensor>& mask_nodes,
                                    const std::optional<at::Tensor>& mask_allow, int64_t beam_size,
                                    at::Tensor& tokens, at::Tensor& parents, at::Tensor& scores,
                                    at::Tensor& next_states) {
  check_beam_step_args(logits, beam_scores, states, row_ptr, child_tokens, dense, mask_offsets, mask_nodes,
                       mask_allow, beam_size);
  check_beam_step_outputs(logits, beam_size, tokens, parents, scores, next_states);
}

at::Tensor dropout_multiplier_meta(const at::Tensor& like, int64_t /*seed*/, double p) {
  check_dropout_args(like, p);
  return at::empty_symint(like.sym_sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, Meta, m) {
  m.impl("dropout_multiplier", &dropout_multiplier_meta);
  m.impl("rq_encode", &rq_encode_meta);
  m.impl("rq_encode_out", &rq_encode_out_meta);
  m.impl("constrained_beam_step", &constrained_beam_step_meta);
  m.impl("constrained_beam_step_out", &constrained_beam_step_out_meta);
}

}  // namespace genrec
