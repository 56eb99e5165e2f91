// Argument checks shared by every constrained_beam_step kernel (CPU, CUDA, Meta).
//
// Shapes, dtypes and devices only: these never read tensor data, so they are safe under
// torch.compile tracing and never synchronize a GPU. The CPU kernel additionally checks the
// values (csrc/cpu/beam_step.cpp); the CUDA kernel treats out-of-range values as "no candidate".
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace genrec {

inline void check_beam_step_args(const at::Tensor& logits, const at::Tensor& beam_scores, const at::Tensor& states,
                                 const at::Tensor& row_ptr, const at::Tensor& child_tokens,
                                 const std::optional<at::Tensor>& dense,
                                 const std::optional<at::Tensor>& mask_offsets,
                                 const std::optional<at::Tensor>& mask_nodes,
                                 const std::optional<at::Tensor>& mask_allow, int64_t beam_size) {
  TORCH_CHECK(logits.dim() == 3, "constrained_beam_step: logits must be 3-D [users, beams, vocab], got shape ",
              logits.sym_sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "constrained_beam_step: logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(logits.sym_size(1) >= 1 && logits.sym_size(2) >= 1,
              "constrained_beam_step: logits need at least one beam and one token, got shape ",
              logits.sym_sizes());
  const auto U = logits.sym_size(0), B = logits.sym_size(1), V = logits.sym_size(2);
  TORCH_CHECK(beam_scores.dim() == 2 && beam_scores.sym_size(0) == U && beam_scores.sym_size(1) == B,
              "constrained_beam_step: beam_scores must be [users, beams] = [", U, ", ", B, "], got ",
              beam_scores.sym_sizes());
  TORCH_CHECK(beam_scores.scalar_type() == at::kFloat, "constrained_beam_step: beam_scores must be float32, got ",
              beam_scores.scalar_type());
  TORCH_CHECK(states.dim() == 2 && states.sym_size(0) == U && states.sym_size(1) == B,
              "constrained_beam_step: states must be [users, beams] = [", U, ", ", B, "], got ", states.sym_sizes());
  TORCH_CHECK(states.scalar_type() == at::kInt, "constrained_beam_step: states must be int32, got ",
              states.scalar_type());
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.sym_size(0) >= 1,
              "constrained_beam_step: row_ptr must be 1-D [nodes + 1], got shape ", row_ptr.sym_sizes());
  TORCH_CHECK(row_ptr.scalar_type() == at::kInt, "constrained_beam_step: row_ptr must be int32, got ",
              row_ptr.scalar_type());
  TORCH_CHECK(child_tokens.dim() == 1 && child_tokens.scalar_type() == at::kInt,
              "constrained_beam_step: child_tokens must be 1-D int32, got ", child_tokens.scalar_type(), " ",
              child_tokens.sym_sizes());
  if (dense.has_value()) {
    TORCH_CHECK(dense->dim() == 2 && dense->sym_size(0) == row_ptr.sym_size(0) - 1 && dense->sym_size(1) == V,
                "constrained_beam_step: dense must be [nodes, vocab] = [", row_ptr.sym_size(0) - 1, ", ", V,
                "], got ", dense->sym_sizes());
    TORCH_CHECK(dense->scalar_type() == at::kInt, "constrained_beam_step: dense must be int32, got ",
                dense->scalar_type());
    TORCH_CHECK(dense->device() == logits.device(), "constrained_beam_step: dense is on ", dense->device(),
                " but logits are on ", logits.device());
  }
  const int given = mask_offsets.has_value() + mask_nodes.has_value() + mask_allow.has_value();
  TORCH_CHECK(given == 0 || given == 3,
              "constrained_beam_step: give mask_offsets, mask_nodes and mask_allow together, or none of them");
  if (given == 3) {
    TORCH_CHECK(mask_offsets->dim() == 1 && mask_offsets->sym_size(0) == U + 1 &&
                    mask_offsets->scalar_type() == at::kLong,
                "constrained_beam_step: mask_offsets must be int64 [users + 1] = [", U + 1, "], got ",
                mask_offsets->scalar_type(), " ", mask_offsets->sym_sizes());
    TORCH_CHECK(mask_nodes->dim() == 1 && mask_nodes->scalar_type() == at::kInt,
                "constrained_beam_step: mask_nodes must be 1-D int32, got ", mask_nodes->scalar_type(), " ",
                mask_nodes->sym_sizes());
    TORCH_CHECK(mask_allow->dim() == 1 && mask_allow->sym_size(0) == U && mask_allow->scalar_type() == at::kBool,
                "constrained_beam_step: mask_allow must be bool [users] = [", U, "], got ",
                mask_allow->scalar_type(), " ", mask_allow->sym_sizes());
    for (const at::Tensor* t : {&*mask_offsets, &*mask_nodes, &*mask_allow}) {
      TORCH_CHECK(t->device() == logits.device(), "constrained_beam_step: the mask tensors must be on ",
                  logits.device(), ", got one on ", t->device());
    }
  }
  TORCH_CHECK(beam_size >= 1, "constrained_beam_step: beam_size must be >= 1, got ", beam_size);
  for (const at::Tensor* t : {&beam_scores, &states, &row_ptr, &child_tokens}) {
    TORCH_CHECK(t->device() == logits.device(), "constrained_beam_step: all inputs must be on ", logits.device(),
                ", got one on ", t->device());
  }
}

inline void check_beam_step_outputs(const at::Tensor& logits, int64_t beam_size, const at::Tensor& tokens,
                                    const at::Tensor& parents, const at::Tensor& scores,
                                    const at::Tensor& next_states) {
  const auto U = logits.sym_size(0);
  struct Out {
    const at::Tensor* t;
    const char* name;
    at::ScalarType dtype;
  };
  for (const Out& o : {Out{&tokens, "tokens", at::kLong}, Out{&parents, "parents", at::kLong},
                       Out{&scores, "scores", at::kFloat}, Out{&next_states, "next_states", at::kInt}}) {
    TORCH_CHECK(o.t->dim() == 2 && o.t->sym_size(0) == U && o.t->sym_size(1) == beam_size,
                "constrained_beam_step: ", o.name, " must have shape [users, beam_size] = [", U, ", ", beam_size,
                "], got ", o.t->sym_sizes());
    TORCH_CHECK(o.t->scalar_type() == o.dtype, "constrained_beam_step: ", o.name, " must be ", o.dtype, ", got ",
                o.t->scalar_type());
    TORCH_CHECK(o.t->device() == logits.device(), "constrained_beam_step: ", o.name, " is on ", o.t->device(),
                " but logits are on ", logits.device());
    TORCH_CHECK(o.t->is_contiguous(), "constrained_beam_step: ", o.name, " must be contiguous");
  }
}

}  // namespace genrec
