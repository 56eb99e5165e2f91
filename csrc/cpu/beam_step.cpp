// constrained_beam_step on the CPU.
//
// Users run in parallel; per user, each live beam's log-softmax normaliser (logsumexp over the
// vocabulary, with a vectorised exp) is computed once, then only the beam's trie children are
// visited: every CSR child (or every non-negative entry of the dense row). Each valid candidate
// becomes one 64-bit key, the score's order key above (2^32 - 1 - (parent * V + token)) below,
// so "larger key" is exactly the tie rule: score descending, then parent ascending, then token
// ascending. nth_element and a sort of the first beam_size keys give the result.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "../beam_step_checks.h"
#include "../beam_step_keys.h"
#include "vectorize.h"

namespace genrec::cpu {
namespace {

// exp(x) for 16 lanes (Cephes-style: 2^n * p(r) with |r| <= ln2 / 2), within 2 ulp; exp(-inf) = 0
// and exp(NaN) = NaN. Inputs above 88 saturate (callers pass x - max <= 0).
__attribute__((always_inline)) inline vfloat exp_vf(vfloat x) {
  const vfloat lo = splat_vf(-87.3365447f);
  const vint underflow = x < lo;
  x = x > splat_vf(88.0f) ? splat_vf(88.0f) : x;
  x = x < lo ? lo : x;
  const vfloat fx = x * 1.44269504088896341f + 0.5f;
  vint n = __builtin_convertvector(fx, vint);            // truncated toward zero
  n += __builtin_convertvector(n, vfloat) > fx;          // floor: a true mask lane is -1
  const vfloat nf = __builtin_convertvector(n, vfloat);
  const vfloat r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  vfloat y = splat_vf(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const vint bits = (n + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const vfloat result = y * scale;
  return underflow ? vfloat{} : result;
}

// log(sum(exp(x))) over n floats; NaN if any x is NaN or +inf, or if every x is -inf (so a beam
// with such logits has no valid candidate, as in the reference).
GENREC_CPU_CLONES
float logsumexp(const float* x, int64_t n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  vfloat vm = splat_vf(neg_inf);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const vfloat v = load_vf(x + i);
    vm = v > vm ? v : vm;
  }
  float m = neg_inf;
  for (int l = 0; l < kLanes; ++l) m = vm[l] > m ? vm[l] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  vfloat vs{};
  const vfloat vmax = splat_vf(m);
  for (i = 0; i + kLanes <= n; i += kLanes) vs += exp_vf(load_vf(x + i) - vmax);
  if (i < n) {
    float tail[kLanes];
    for (int l = 0; l < kLanes; ++l) tail[l] = i + l < n ? x[i + l] - m : neg_inf;
    vs += exp_vf(load_vf(tail));
  }
  float s = 0.f;
  for (int l = 0; l < kLanes; ++l) s += vs[l];
  return m + std::log(s);
}

struct Level {
  const int32_t* row_ptr;
  int64_t nodes;
  const int32_t* child_tokens;
  int64_t children;
  const int32_t* dense;  // [nodes, V] or null
};

struct Mask {
  const int64_t* offsets;  // [U + 1], null when there is no mask
  const int32_t* nodes;
  int64_t size;
  const bool* allow;
};

// Is child node `c` allowed for user u by the per-request mask?
inline bool mask_allows(const Mask& m, int64_t u, int32_t c) {
  if (m.offsets == nullptr) return true;
  const int32_t* lo = m.nodes + m.offsets[u];
  const int32_t* hi = m.nodes + m.offsets[u + 1];
  return std::binary_search(lo, hi, c) == m.allow[u];
}

// Validates what the CPU can check cheaply about the per-request mask.
void check_mask_values(const Mask& m, int64_t U) {
  if (m.offsets == nullptr) return;
  for (int64_t u = 0; u < U; ++u) {
    const int64_t a = m.offsets[u], b = m.offsets[u + 1];
    TORCH_CHECK(0 <= a && a <= b && b <= m.size, "constrained_beam_step: mask_offsets must be non-decreasing in [0, ",
                m.size, "], got mask_offsets[", u, ":", u + 2, "] = [", a, ", ", b, "]");
    TORCH_CHECK(std::is_sorted(m.nodes + a, m.nodes + b), "constrained_beam_step: mask_nodes of user ", u,
                " must be sorted ascending");
  }
}

template <typename scalar_t>
void beam_step_kernel(const at::Tensor& logits, const at::Tensor& beam_scores, const at::Tensor& states,
                      const Level& level, const Mask& mask, int64_t K, at::Tensor& tokens, at::Tensor& parents,
                      at::Tensor& scores, at::Tensor& next_states) {
  const int64_t U = logits.size(0), B = logits.size(1), V = logits.size(2);
  const scalar_t* lp = logits.data_ptr<scalar_t>();
  const float* bsp = beam_scores.data_ptr<float>();
  const int32_t* sp = states.data_ptr<int32_t>();
  int64_t* tok_out = tokens.data_ptr<int64_t>();
  int64_t* par_out = parents.data_ptr<int64_t>();
  float* score_out = scores.data_ptr<float>();
  int32_t* state_out = next_states.data_ptr<int32_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, B * V));

  at::parallel_for(0, U, grain, [&](int64_t u0, int64_t u1) {
    std::vector<uint64_t> cand;
    cand.reserve(static_cast<size_t>(std::min<int64_t>(B * V, int64_t{1} << 20)));
    std::vector<float> row(std::is_same_v<scalar_t, float> ? 0 : V);
    for (int64_t u = u0; u < u1; ++u) {
      cand.clear();
      for (int64_t b = 0; b < B; ++b) {
        const int64_t s = sp[u * B + b];
        const float bs = bsp[u * B + b];
        if (s < 0 || s >= level.nodes || !(bs > -std::numeric_limits<float>::infinity())) continue;
        const scalar_t* src = lp + (u * B + b) * V;
        const float* x;
        if constexpr (std::is_same_v<scalar_t, float>) {
          x = src;
        } else {
          for (int64_t v = 0; v < V; ++v) row[v] = static_cast<float>(src[v]);
          x = row.data();
        }
        const float lse = logsumexp(x, V);
        auto offer = [&](int64_t v, int32_t c) {
          const float score = bs + (x[v] - lse);
          const uint32_t key = score_key(score);
          if (key == 0 || !mask_allows(mask, u, c)) return;
          const uint64_t flat = static_cast<uint64_t>(b * V + v);
          cand.push_back((static_cast<uint64_t>(key) << 32) | (0xFFFFFFFFull - flat));
        };
        if (level.dense != nullptr) {
          const int32_t* drow = level.dense + s * V;
          for (int64_t v = 0; v < V; ++v) {
            if (drow[v] >= 0) offer(v, drow[v]);
          }
        } else {
          const int64_t lo = std::clamp<int64_t>(level.row_ptr[s], 0, level.children);
          const int64_t hi = std::clamp<int64_t>(level.row_ptr[s + 1], lo, level.children);
          for (int64_t c = lo; c < hi; ++c) {
            const int64_t v = level.child_tokens[c];
            if (v >= 0 && v < V) offer(v, static_cast<int32_t>(c));
          }
        }
      }
      const int64_t n = std::min<int64_t>(K, static_cast<int64_t>(cand.size()));
      if (static_cast<int64_t>(cand.size()) > n) {
        std::nth_element(cand.begin(), cand.begin() + n, cand.end(), std::greater<uint64_t>());
      }
      std::sort(cand.begin(), cand.begin() + n, std::greater<uint64_t>());
      for (int64_t r = 0; r < K; ++r) {
        const int64_t o = u * K + r;
        if (r >= n) {
          tok_out[o] = -1;
          par_out[o] = -1;
          score_out[o] = -std::numeric_limits<float>::infinity();
          state_out[o] = -1;
          continue;
        }
        const uint64_t key = cand[r];
        const int64_t flat = static_cast<int64_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull));
        const int64_t b = flat / V, v = flat % V;
        const int64_t s = sp[u * B + b];
        int32_t child;
        if (level.dense != nullptr) {
          child = level.dense[s * V + v];
        } else {
          const int64_t lo = std::clamp<int64_t>(level.row_ptr[s], 0, level.children);
          const int64_t hi = std::clamp<int64_t>(level.row_ptr[s + 1], lo, level.children);
          const int32_t* it = std::lower_bound(level.child_tokens + lo, level.child_tokens + hi, v);
          child = static_cast<int32_t>(it - level.child_tokens);
        }
        tok_out[o] = v;
        par_out[o] = b;
        score_out[o] = key_score(static_cast<uint32_t>(key >> 32));
        state_out[o] = child;
      }
    }
  });
}

void beam_step_out_cpu(const at::Tensor& logits_in, const at::Tensor& beam_scores_in, const at::Tensor& states_in,
                       const at::Tensor& row_ptr_in, const at::Tensor& child_tokens_in,
                       const std::optional<at::Tensor>& dense_in, const std::optional<at::Tensor>& mask_offsets_in,
                       const std::optional<at::Tensor>& mask_nodes_in, const std::optional<at::Tensor>& mask_allow_in,
                       int64_t beam_size, at::Tensor& tokens, at::Tensor& parents, at::Tensor& scores,
                       at::Tensor& next_states) {
  check_beam_step_args(logits_in, beam_scores_in, states_in, row_ptr_in, child_tokens_in, dense_in, mask_offsets_in,
                       mask_nodes_in, mask_allow_in, beam_size);
  check_beam_step_outputs(logits_in, beam_size, tokens, parents, scores, next_states);
  const int64_t B = logits_in.size(1), V = logits_in.size(2);
  TORCH_CHECK(B * V < (int64_t{1} << 32), "constrained_beam_step: beams * vocab must be below 2^32, got ", B, " * ",
              V);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor beam_scores = beam_scores_in.contiguous();
  const at::Tensor states = states_in.contiguous();
  const at::Tensor row_ptr = row_ptr_in.contiguous();
  const at::Tensor child_tokens = child_tokens_in.contiguous();
  const at::Tensor dense = dense_in.has_value() ? dense_in->contiguous() : at::Tensor();
  Level level{row_ptr.data_ptr<int32_t>(), row_ptr.size(0) - 1, child_tokens.data_ptr<int32_t>(),
              child_tokens.size(0), dense.defined() ? dense.data_ptr<int32_t>() : nullptr};
  at::Tensor mask_offsets, mask_nodes, mask_allow;
  Mask mask{nullptr, nullptr, 0, nullptr};
  if (mask_offsets_in.has_value()) {
    mask_offsets = mask_offsets_in->contiguous();
    mask_nodes = mask_nodes_in->contiguous();
    mask_allow = mask_allow_in->contiguous();
    mask = Mask{mask_offsets.data_ptr<int64_t>(), mask_nodes.data_ptr<int32_t>(), mask_nodes.size(0),
                mask_allow.data_ptr<bool>()};
    check_mask_values(mask, logits.size(0));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "constrained_beam_step_cpu", [&] {
    beam_step_kernel<scalar_t>(logits, beam_scores, states, level, mask, beam_size, tokens, parents, scores,
                               next_states);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> beam_step_cpu(
    const at::Tensor& logits, const at::Tensor& beam_scores, const at::Tensor& states, const at::Tensor& row_ptr,
    const at::Tensor& child_tokens, const std::optional<at::Tensor>& dense,
    const std::optional<at::Tensor>& mask_offsets, const std::optional<at::Tensor>& mask_nodes,
    const std::optional<at::Tensor>& mask_allow, int64_t beam_size) {
  check_beam_step_args(logits, beam_scores, states, row_ptr, child_tokens, dense, mask_offsets, mask_nodes,
                       mask_allow, beam_size);
  const int64_t U = logits.size(0);
  const auto opts = logits.options();
  at::Tensor tokens = at::empty({U, beam_size}, opts.dtype(at::kLong));
  at::Tensor parents = at::empty({U, beam_size}, opts.dtype(at::kLong));
  at::Tensor scores = at::empty({U, beam_size}, opts.dtype(at::kFloat));
  at::Tensor next_states = at::empty({U, beam_size}, opts.dtype(at::kInt));
  beam_step_out_cpu(logits, beam_scores, states, row_ptr, child_tokens, dense, mask_offsets, mask_nodes, mask_allow,
                    beam_size, tokens, parents, scores, next_states);
  return {tokens, parents, scores, next_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CPU, m) {
  m.impl("constrained_beam_step", &beam_step_cpu);
  m.impl("constrained_beam_step_out", &beam_step_out_cpu);
}

}  // namespace genrec::cpu
