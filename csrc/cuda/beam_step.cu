// constrained_beam_step on CUDA: one fused kernel, one block of 256 threads per user.
//
// Per user (blocks stride over users):
//  1. per beam: state, score, first CSR child and candidate count (V for a dense level);
//     an exclusive scan of the counts gives every candidate a slot, in (beam, child) order,
//     which is flat (beam * V + token) order because children are sorted by token;
//  2. one warp per beam: logsumexp of the logits row (max, then sum of exp);
//  3. one warp per beam: each child's 32-bit order key (0: not a valid candidate), written to
//     the user's key buffer (shared memory when it fits, else a global workspace slot);
//  4. radix select, 8 bits a pass: the K-th largest key T and how many keys equal to T to take;
//  5. ordered compaction (ballots, one block-wide scan per 256 keys): every key > T, and the
//     first `need` keys == T in slot order, i.e. the lowest (parent, token) among exact ties;
//  6. each selected candidate's rank (score descending, slot ascending) and its outputs.
// Nothing is read back to the host and shapes are fixed, so the kernel can be graph-captured.
// Out-of-range states, CSR bounds, tokens and mask offsets are clamped or skipped, never read
// out of bounds.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../beam_step_checks.h"
#include "../beam_step_keys.h"
#include "beam_step_launch.h"

namespace genrec::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBeams = 1024;             // input beams per user
constexpr int kMaxK = 1024;                 // beam_size
constexpr int64_t kMaxCandidates = 1 << 28;  // beams * vocab
constexpr int64_t kSharedKeyBudget = 160 * 1024;
constexpr int64_t kWorkspaceBudget = int64_t{256} << 20;
constexpr unsigned kFull = 0xffffffffu;

template <typename scalar_t>
struct Params {
  const scalar_t* logits;
  const float* beam_scores;
  const int32_t* states;
  const int32_t* row_ptr;
  const int32_t* child_tokens;
  const int32_t* dense;  // null for a CSR level
  const int64_t* mask_offsets;  // null without a mask
  const int32_t* mask_nodes;
  const bool* mask_allow;
  int64_t* tokens;
  int64_t* parents;
  float* scores;
  int32_t* next_states;
  uint32_t* key_workspace;  // null: keys live in shared memory
  int64_t key_stride;
  int64_t U;
  int B, V, K;
  int32_t nodes, n_children;
  int64_t n_mask;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(c10::Half x) { return static_cast<float>(x); }
__device__ __forceinline__ float to_float(c10::BFloat16 x) { return static_cast<float>(x); }
__device__ __forceinline__ float to_float(double x) { return static_cast<float>(x); }

__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

__device__ __forceinline__ float warp_sumf(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ __forceinline__ int warp_inclusive_scan(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += n;
  }
  return v;
}

using beam_step_launch::Layout;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) beam_step_kernel(const Params<scalar_t> p, int64_t shared_keys) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int hist[256];
  __shared__ int warp_tot[2][2][kWarps];  // [buffer][gt/eq][warp]
  __shared__ int s_nvalid, s_digit, s_krem;

  const Layout lay(p.B, p.K, shared_keys);
  int32_t* node = reinterpret_cast<int32_t*>(smem + lay.node);
  int32_t* first = reinterpret_cast<int32_t*>(smem + lay.first);
  float* bscore = reinterpret_cast<float*>(smem + lay.bscore);
  float* lse = reinterpret_cast<float*>(smem + lay.lse);
  int32_t* off = reinterpret_cast<int32_t*>(smem + lay.off);
  uint32_t* sel_key = reinterpret_cast<uint32_t*>(smem + lay.sel_key);
  int32_t* sel_pos = reinterpret_cast<int32_t*>(smem + lay.sel_pos);
  uint32_t* keys = p.key_workspace != nullptr ? p.key_workspace + blockIdx.x * p.key_stride
                                              : reinterpret_cast<uint32_t*>(smem + lay.keys);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int B = p.B, V = p.V, K = p.K;
  const bool dense = p.dense != nullptr;
  const float neg_inf = -__int_as_float(0x7f800000);

  for (int64_t u = blockIdx.x; u < p.U; u += gridDim.x) {
    // ---- 1. beams: liveness, CSR start, candidate counts, then their exclusive scan ----
    if (tid == 0) s_nvalid = 0;
    for (int b = tid; b < B; b += kThreads) {
      const int64_t i = u * B + b;
      const int32_t s = p.states[i];
      const float bs = p.beam_scores[i];
      const bool alive = s >= 0 && s < p.nodes && bs > neg_inf;  // NaN scores are dead too
      int32_t lo = 0, count = 0;
      if (alive) {
        if (dense) {
          count = V;
        } else {
          lo = min(max(p.row_ptr[s], 0), p.n_children);
          const int32_t hi = min(max(p.row_ptr[s + 1], lo), p.n_children);
          count = min(hi - lo, V);
        }
      }
      node[b] = alive ? s : -1;
      first[b] = lo;
      bscore[b] = bs;
      off[b] = count;
    }
    __syncthreads();
    {
      const int per = (B + kThreads - 1) / kThreads;
      const int begin = min(B, tid * per), end = min(B, begin + per);
      int local = 0;
      for (int i = begin; i < end; ++i) local += off[i];
      const int incl = warp_inclusive_scan(local, lane);
      if (lane == 31) warp_tot[0][0][warp] = incl;
      __syncthreads();
      int run = incl - local, total = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        run += w < warp ? warp_tot[0][0][w] : 0;
        total += warp_tot[0][0][w];
      }
      for (int i = begin; i < end; ++i) {
        const int c = off[i];
        off[i] = run;
        run += c;
      }
      if (tid == 0) off[B] = total;
      __syncthreads();
    }

    // ---- 2. logsumexp of each live beam's logits row ----
    for (int b = warp; b < B; b += kWarps) {
      if (node[b] < 0) continue;
      const scalar_t* row = p.logits + (u * B + b) * static_cast<int64_t>(V);
      float m = neg_inf;
      for (int v = lane; v < V; v += 32) m = fmaxf(m, to_float(row[v]));
      m = warp_max(m);
      float sum = 0.f;
      for (int v = lane; v < V; v += 32) sum += expf(to_float(row[v]) - m);
      sum = warp_sumf(sum);
      // NaN when the row holds NaN or +inf, or is all -inf: then no candidate is valid.
      if (lane == 0) lse[b] = m + logf(sum);
    }
    __syncthreads();

    // ---- 3. candidate keys ----
    int64_t m_lo = 0, m_hi = 0;
    bool m_allow = false;
    int unsorted = 0;
    if (p.mask_offsets != nullptr) {
      m_lo = min(max(p.mask_offsets[u], int64_t{0}), p.n_mask);
      m_hi = min(max(p.mask_offsets[u + 1], m_lo), p.n_mask);
      m_allow = p.mask_allow[u];
      for (int64_t i = m_lo + tid; i + 1 < m_hi; i += kThreads) unsorted |= p.mask_nodes[i] > p.mask_nodes[i + 1];
    }
    // A sorted list is binary-searched; an unsorted one (the op does not require order) is scanned.
    const bool m_sorted = !__syncthreads_or(unsorted);
    int my_valid = 0;
    for (int b = warp; b < B; b += kWarps) {
      const int32_t s = node[b];
      if (s < 0) continue;
      const int base = off[b], n = off[b + 1] - off[b];
      const float bs = bscore[b], l = lse[b];
      const scalar_t* row = p.logits + (u * B + b) * static_cast<int64_t>(V);
      for (int j = lane; j < n; j += 32) {
        int32_t c, v;
        if (dense) {
          v = j;
          c = p.dense[static_cast<int64_t>(s) * V + j];
        } else {
          c = first[b] + j;
          v = p.child_tokens[c];
        }
        uint32_t key = 0;
        if (c >= 0 && v >= 0 && v < V) {
          key = score_key(bs + (to_float(row[v]) - l));
          if (key != 0 && p.mask_offsets != nullptr) {
            bool listed = false;
            if (m_sorted) {
              int64_t lo = m_lo, hi = m_hi;
              while (lo < hi) {
                const int64_t mid = (lo + hi) >> 1;
                if (p.mask_nodes[mid] < c) lo = mid + 1; else hi = mid;
              }
              listed = lo < m_hi && p.mask_nodes[lo] == c;
            } else {
              for (int64_t i = m_lo; i < m_hi && !listed; ++i) listed = p.mask_nodes[i] == c;
            }
            if (listed != m_allow) key = 0;
          }
        }
        keys[base + j] = key;
        my_valid += key != 0;
      }
    }
    my_valid = warp_sum(my_valid);
    if (lane == 0 && my_valid) atomicAdd(&s_nvalid, my_valid);
    __syncthreads();
    const int C = off[B];
    const int k_eff = min(K, s_nvalid);

    if (k_eff > 0) {
      // ---- 4. radix select of the k_eff-th largest key ----
      uint32_t prefix = 0, pmask = 0;
      int krem = k_eff;
#pragma unroll 1
      for (int shift = 24; shift >= 0; shift -= 8) {
        hist[tid] = 0;  // kThreads == 256 bins
        __syncthreads();
        // Most keys share their top digits, so lanes with the same bin add once through a leader.
        for (int start = 0; start < C; start += kThreads) {  // block-uniform trip count
          const int i = start + tid;
          const uint32_t k = i < C ? keys[i] : 0u;
          const bool match = i < C && (k & pmask) == prefix;
          const int bin = match ? static_cast<int>((k >> shift) & 0xFF) : 256;
          const unsigned peers = __match_any_sync(kFull, bin);
          if (match && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
        }
        __syncthreads();
        if (warp == 0) {
          int cnt[8], lsum = 0;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            cnt[i] = hist[255 - lane * 8 - i];  // lane 0 holds the highest digits
            lsum += cnt[i];
          }
          const int incl = warp_inclusive_scan(lsum, lane);
          const unsigned reach = __ballot_sync(kFull, incl >= krem);
          if (reach != 0 && lane == __ffs(reach) - 1) {
            int run = incl - lsum;
            bool done = false;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
              if (!done && run + cnt[i] >= krem) {
                s_digit = 255 - lane * 8 - i;
                s_krem = krem - run;
                done = true;
              }
              run += cnt[i];
            }
          }
        }
        __syncthreads();
        prefix |= static_cast<uint32_t>(s_digit) << shift;
        pmask |= 0xFFu << shift;
        krem = s_krem;
      }
      const uint32_t T = prefix;
      const int need = krem;           // keys equal to T to take, in slot order
      const int n_gt = k_eff - need;   // every key above T is taken

      // ---- 5. ordered compaction into sel_key / sel_pos ----
      int base_gt = 0, base_eq = 0, buf = 0;
      const unsigned below = (1u << lane) - 1u;
      for (int start = 0; start < C; start += kThreads) {
        const int i = start + tid;
        const uint32_t k = i < C ? keys[i] : 0u;
        const bool gt = k > T, eq = k == T;
        const unsigned bg = __ballot_sync(kFull, gt), be = __ballot_sync(kFull, eq);
        if (lane == 0) {
          warp_tot[buf][0][warp] = __popc(bg);
          warp_tot[buf][1][warp] = __popc(be);
        }
        __syncthreads();
        int before_gt = 0, before_eq = 0, tile_gt = 0, tile_eq = 0;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          const int g = warp_tot[buf][0][w], e = warp_tot[buf][1][w];
          before_gt += w < warp ? g : 0;
          before_eq += w < warp ? e : 0;
          tile_gt += g;
          tile_eq += e;
        }
        if (gt) {
          const int slot = base_gt + before_gt + __popc(bg & below);
          if (slot < n_gt) {
            sel_key[slot] = k;
            sel_pos[slot] = i;
          }
        }
        if (eq) {
          const int r = base_eq + before_eq + __popc(be & below);
          if (r < need) {
            sel_key[n_gt + r] = k;
            sel_pos[n_gt + r] = i;
          }
        }
        base_gt += tile_gt;
        base_eq += tile_eq;
        buf ^= 1;
        if (base_gt >= n_gt && base_eq >= need) break;  // uniform: every thread has the same bases
      }
      __syncthreads();

      // ---- 6. rank (score descending, slot ascending) and write ----
      for (int i = tid; i < k_eff; i += kThreads) {
        const uint32_t ki = sel_key[i];
        const int pi = sel_pos[i];
        int rank = 0;
        for (int j = 0; j < k_eff; ++j) {
          const uint32_t kj = sel_key[j];
          rank += (kj > ki) || (kj == ki && sel_pos[j] < pi);
        }
        int lo = 0, hi = B;  // the beam b with off[b] <= pi < off[b + 1]: last b with off[b] <= pi
        while (lo < hi) {
          const int mid = (lo + hi + 1) >> 1;
          if (off[mid] <= pi) lo = mid; else hi = mid - 1;
        }
        const int b = lo, j = pi - off[b];
        int32_t c, v;
        if (dense) {
          v = j;
          c = p.dense[static_cast<int64_t>(node[b]) * V + j];
        } else {
          c = first[b] + j;
          v = p.child_tokens[c];
        }
        const int64_t o = u * K + rank;
        p.tokens[o] = v;
        p.parents[o] = b;
        p.scores[o] = key_score(ki);
        p.next_states[o] = c;
      }
    }
    for (int r = k_eff + tid; r < K; r += kThreads) {
      const int64_t o = u * K + r;
      p.tokens[o] = -1;
      p.parents[o] = -1;
      p.scores[o] = neg_inf;
      p.next_states[o] = -1;
    }
    __syncthreads();  // the next user reuses every shared array
  }
}

void beam_step_out_cuda(const at::Tensor& logits_in, const at::Tensor& beam_scores_in, const at::Tensor& states_in,
                        const at::Tensor& row_ptr_in, const at::Tensor& child_tokens_in,
                        const std::optional<at::Tensor>& dense_in, const std::optional<at::Tensor>& mask_offsets_in,
                        const std::optional<at::Tensor>& mask_nodes_in,
                        const std::optional<at::Tensor>& mask_allow_in, int64_t beam_size, at::Tensor& tokens,
                        at::Tensor& parents, at::Tensor& scores, at::Tensor& next_states) {
  check_beam_step_args(logits_in, beam_scores_in, states_in, row_ptr_in, child_tokens_in, dense_in, mask_offsets_in,
                       mask_nodes_in, mask_allow_in, beam_size);
  check_beam_step_outputs(logits_in, beam_size, tokens, parents, scores, next_states);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const int64_t U = logits_in.size(0), B = logits_in.size(1), V = logits_in.size(2);
  TORCH_CHECK(B <= kMaxBeams && beam_size <= kMaxK, "constrained_beam_step: the CUDA kernel takes at most ",
              kMaxBeams, " input beams and beam_size ", kMaxK, " (got ", B, " and ", beam_size,
              "); use backend 'triton' (any number of beams, beam_size <= 1024) or 'reference' on a GPU");
  TORCH_CHECK(B * V <= kMaxCandidates, "constrained_beam_step: the CUDA kernel takes beams * vocab <= 2^28, got ",
              B, " * ", V);
  TORCH_CHECK(row_ptr_in.size(0) - 1 <= std::numeric_limits<int32_t>::max() &&
                  child_tokens_in.size(0) <= std::numeric_limits<int32_t>::max(),
              "constrained_beam_step: trie levels must have fewer than 2^31 nodes");
  if (U == 0) return;

  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor beam_scores = beam_scores_in.contiguous();
  const at::Tensor states = states_in.contiguous();
  const at::Tensor row_ptr = row_ptr_in.contiguous();
  const at::Tensor child_tokens = child_tokens_in.contiguous();
  const at::Tensor dense = dense_in.has_value() ? dense_in->contiguous() : at::Tensor();
  at::Tensor mask_offsets, mask_nodes, mask_allow;
  if (mask_offsets_in.has_value()) {
    mask_offsets = mask_offsets_in->contiguous();
    mask_nodes = mask_nodes_in->contiguous();
    mask_allow = mask_allow_in->contiguous();
  }

  const int device = logits.get_device();
  int optin = 0, sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_candidates = B * V;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "constrained_beam_step_cuda", [&] {
    auto kernel = &beam_step_kernel<scalar_t>;
    // The kernel's own static shared size and current dynamic limit, on this (the guarded) device.
    cudaFuncAttributes attr{};
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int64_t static_smem = static_cast<int64_t>(attr.sharedSizeBytes);
    const beam_step_launch::SharedPlan plan =
        beam_step_launch::plan_shared(B, beam_size, V, static_smem, optin, kSharedKeyBudget);
    TORCH_CHECK(plan.fits, "constrained_beam_step: ", plan.dynamic_bytes, " bytes of shared memory needed, the ",
                "device allows ", optin - static_smem);
    const int64_t raise_to =
        beam_step_launch::dynamic_optin_bytes(plan.dynamic_bytes, static_smem, attr.maxDynamicSharedSizeBytes);
    if (raise_to > 0) {
      // Per function and device; allowed during graph capture (it is not a stream operation).
      C10_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(raise_to)));
    }
    int64_t grid = U;
    at::Tensor workspace;
    if (!plan.shared_keys) {
      // Blocks stride over users; each block owns one workspace slot of max_candidates keys.
      grid = beam_step_launch::workspace_grid(U, max_candidates * 4, kWorkspaceBudget, sms);
      workspace = at::empty({grid * max_candidates}, logits.options().dtype(at::kInt));
    }
    grid = std::min<int64_t>(grid, std::numeric_limits<int32_t>::max());

    Params<scalar_t> params{};
    params.logits = logits.data_ptr<scalar_t>();
    params.beam_scores = beam_scores.data_ptr<float>();
    params.states = states.data_ptr<int32_t>();
    params.row_ptr = row_ptr.data_ptr<int32_t>();
    params.child_tokens = child_tokens.numel() ? child_tokens.data_ptr<int32_t>() : nullptr;
    params.dense = dense.defined() ? dense.data_ptr<int32_t>() : nullptr;
    params.mask_offsets = mask_offsets.defined() ? mask_offsets.data_ptr<int64_t>() : nullptr;
    params.mask_nodes = mask_offsets.defined() && mask_nodes.numel() ? mask_nodes.data_ptr<int32_t>() : nullptr;
    params.mask_allow = mask_offsets.defined() ? mask_allow.data_ptr<bool>() : nullptr;
    params.tokens = tokens.data_ptr<int64_t>();
    params.parents = parents.data_ptr<int64_t>();
    params.scores = scores.data_ptr<float>();
    params.next_states = next_states.data_ptr<int32_t>();
    params.key_workspace = plan.shared_keys ? nullptr : reinterpret_cast<uint32_t*>(workspace.data_ptr<int32_t>());
    params.key_stride = max_candidates;
    params.U = U;
    params.B = static_cast<int>(B);
    params.V = static_cast<int>(V);
    params.K = static_cast<int>(beam_size);
    params.nodes = static_cast<int32_t>(row_ptr.size(0) - 1);
    params.n_children = static_cast<int32_t>(child_tokens.size(0));
    params.n_mask = mask_offsets.defined() ? mask_nodes.size(0) : 0;
    kernel<<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(plan.dynamic_bytes), stream>>>(
        params, plan.shared_keys ? max_candidates : 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> beam_step_cuda(
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
  beam_step_out_cuda(logits, beam_scores, states, row_ptr, child_tokens, dense, mask_offsets, mask_nodes, mask_allow,
                     beam_size, tokens, parents, scores, next_states);
  return {tokens, parents, scores, next_states};
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CUDA, m) {
  m.impl("constrained_beam_step", &beam_step_cuda);
  m.impl("constrained_beam_step_out", &beam_step_out_cuda);
}

}  // namespace genrec::cuda
