// constrained_beam_step on the CPU.
//
// The same algorithm as the CUDA kernel (csrc/cuda/beam_step.cu), run sequentially per user
// with users in parallel (parallel.h: chunks of users, robust to a busy neighbour), so the CPU tests exercise the selection logic the GPU runs: each live
// beam's logsumexp (vectorised exp) is computed once; only the beam's trie children (its CSR
// run, or the V entries of a dense row) get a slot, in (parent, token) order; each slot holds
// the candidate's 32-bit order key (0 when invalid); a radix select finds the beam_size-th
// largest key and an ordered pass takes the winners, lowest slot first among exact ties, which
// is the tie rule: score descending, then parent ascending, then token ascending. Before the
// select, keys below a cheap lower bound of the beam_size-th largest (the smallest of the live
// beams' best keys) are dropped: the select then runs over a few dozen keys instead of all.
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
#include "parallel.h"
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

// The k_eff largest of `keys` (k_eff <= number of non-zero keys; `slots` ascending, parallel to
// `keys`) in (key descending, slot ascending) order, as positions into keys. The same algorithm as
// the CUDA kernel, done sequentially: a radix select of the k_eff-th largest key T (8 bits a pass,
// counting only keys that share the bits fixed so far, digits scanned from 255 down), then every
// key above T plus the first `need` keys equal to T in slot order, then a sort of those.
void select_top(const std::vector<uint32_t>& keys, const std::vector<int64_t>& slots, int64_t k_eff,
                std::vector<int64_t>& selected) {
  const int64_t C = static_cast<int64_t>(keys.size());
  uint32_t prefix = 0, pmask = 0;
  int64_t krem = k_eff;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t hist[256] = {};
    for (int64_t i = 0; i < C; ++i) {
      if ((keys[i] & pmask) == prefix) ++hist[(keys[i] >> shift) & 0xFF];
    }
    int64_t run = 0;
    int digit = 0;
    for (int d = 255; d >= 0; --d) {
      if (run + hist[d] >= krem) {
        digit = d;
        break;
      }
      run += hist[d];
    }
    krem -= run;
    prefix |= static_cast<uint32_t>(digit) << shift;
    pmask |= 0xFFu << shift;
  }
  const uint32_t T = prefix;
  const int64_t need = krem, n_gt = k_eff - need;
  selected.clear();
  int64_t taken_eq = 0;
  for (int64_t i = 0; i < C; ++i) {
    if (keys[i] > T || (keys[i] == T && taken_eq++ < need)) selected.push_back(i);
  }
  TORCH_CHECK(static_cast<int64_t>(selected.size()) == k_eff && n_gt >= 0,
              "constrained_beam_step: internal error in the radix select");
  std::sort(selected.begin(), selected.end(), [&](int64_t a, int64_t b) {
    return keys[a] > keys[b] || (keys[a] == keys[b] && slots[a] < slots[b]);
  });
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
  const float neg_inf = -std::numeric_limits<float>::infinity();

  parallel_chunks(U, grain, [&](int64_t u0, int64_t u1) {
    std::vector<int32_t> node(B), first(B);
    std::vector<int64_t> off(B + 1), selected, kept_slots;
    std::vector<uint32_t> keys, kept_keys, beam_best, bound_pool;
    std::vector<float> row(std::is_same_v<scalar_t, float> ? 0 : V);
    for (int64_t u = u0; u < u1; ++u) {
      // Slots: beam b's candidates (its CSR children, or all V tokens of a dense level) are slots
      // off[b] .. off[b+1] - 1, in token order, so slot order is (parent, token) order.
      off[0] = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t s = sp[u * B + b];
        const float bs = bsp[u * B + b];
        const bool alive = s >= 0 && s < level.nodes && bs > neg_inf;
        int64_t lo = 0, count = 0;
        if (alive) {
          if (level.dense != nullptr) {
            count = V;
          } else {
            lo = std::clamp<int64_t>(level.row_ptr[s], 0, level.children);
            const int64_t hi = std::clamp<int64_t>(level.row_ptr[s + 1], lo, level.children);
            count = std::min<int64_t>(hi - lo, V);
          }
        }
        node[b] = alive ? static_cast<int32_t>(s) : -1;
        first[b] = static_cast<int32_t>(lo);
        off[b + 1] = off[b] + count;
      }
      keys.assign(static_cast<size_t>(off[B]), 0u);
      beam_best.clear();
      int64_t n_valid = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t s = node[b];
        if (s < 0) continue;
        const scalar_t* src = lp + (u * B + b) * V;
        const float* x;
        if constexpr (std::is_same_v<scalar_t, float>) {
          x = src;
        } else {
          for (int64_t v = 0; v < V; ++v) row[v] = static_cast<float>(src[v]);
          x = row.data();
        }
        const float lse = logsumexp(x, V);
        const float bs = bsp[u * B + b];
        uint32_t best = 0;
        for (int64_t j = 0, n = off[b + 1] - off[b]; j < n; ++j) {
          int64_t c, v;
          if (level.dense != nullptr) {
            v = j;
            c = level.dense[s * V + j];
          } else {
            c = first[b] + j;
            v = level.child_tokens[c];
          }
          if (c < 0 || v < 0 || v >= V) continue;
          uint32_t key = score_key(bs + (x[v] - lse));
          if (key != 0 && !mask_allows(mask, u, static_cast<int32_t>(c))) key = 0;
          keys[off[b] + j] = key;
          n_valid += key != 0;
          best = std::max(best, key);
        }
        if (best != 0) beam_best.push_back(best);
      }
      const int64_t k_eff = std::min<int64_t>(K, n_valid);
      if (k_eff > 0) {
        // Only keys >= the smallest of any k_eff distinct valid keys can be among the k_eff largest:
        // take the best key of each live beam when there are enough beams (tight), else the first
        // k_eff valid keys, and hand the survivors (in slot order) to the selection.
        bound_pool.clear();
        if (static_cast<int64_t>(beam_best.size()) >= k_eff) {
          bound_pool = beam_best;
        } else {
          for (int64_t i = 0; i < off[B] && static_cast<int64_t>(bound_pool.size()) < k_eff; ++i) {
            if (keys[i] != 0) bound_pool.push_back(keys[i]);
          }
        }
        std::nth_element(bound_pool.begin(), bound_pool.begin() + (k_eff - 1), bound_pool.end(),
                         std::greater<uint32_t>());
        const uint32_t bound = bound_pool[k_eff - 1];
        kept_keys.clear();
        kept_slots.clear();
        for (int64_t i = 0; i < off[B]; ++i) {
          if (keys[i] >= bound && keys[i] != 0) {
            kept_keys.push_back(keys[i]);
            kept_slots.push_back(i);
          }
        }
        select_top(kept_keys, kept_slots, k_eff, selected);
        for (int64_t& r : selected) r = kept_slots[r];
      }
      for (int64_t r = 0; r < K; ++r) {
        const int64_t o = u * K + r;
        if (r >= k_eff) {
          tok_out[o] = -1;
          par_out[o] = -1;
          score_out[o] = neg_inf;
          state_out[o] = -1;
          continue;
        }
        const int64_t slot = selected[r];
        const int64_t b = std::upper_bound(off.begin(), off.end(), slot) - off.begin() - 1;
        const int64_t j = slot - off[b];
        int64_t c, v;
        if (level.dense != nullptr) {
          v = j;
          c = level.dense[static_cast<int64_t>(node[b]) * V + j];
        } else {
          c = first[b] + j;
          v = level.child_tokens[c];
        }
        tok_out[o] = v;
        par_out[o] = b;
        score_out[o] = key_score(keys[slot]);
        state_out[o] = static_cast<int32_t>(c);
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
