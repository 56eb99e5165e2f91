// Launch planning of the CUDA constrained_beam_step: pure host arithmetic, no CUDA calls, so that
// tests/ops/test_beam_step_launch.py can compile this header alone with a host C++ compiler.
//
// Shared memory: a block's static arrays (ptxas: ~1.2 KB, read at run time from
// cudaFuncGetAttributes, never assumed) plus the dynamic layout below. Without an opt-in a block may
// use 48 KB of static + dynamic shared memory in all, so a dynamic size above 48 KB - static (not
// above 48 KB) needs cudaFuncAttributeMaxDynamicSharedMemorySize raised first.
#pragma once
#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define GENREC_LAUNCH_HD __host__ __device__
#else
#define GENREC_LAUNCH_HD
#endif

namespace genrec::beam_step_launch {

constexpr int64_t kDefaultSharedBytes = 48 * 1024;  // static + dynamic per block without an opt-in

// Shared-memory layout of the per-beam and selection arrays (the keys follow when they fit).
struct Layout {
  int64_t node, first, bscore, lse, off, sel_key, sel_pos, keys, total;
  GENREC_LAUNCH_HD Layout(int64_t B, int64_t K, int64_t shared_keys) {
    int64_t at = 0;
    auto take = [&](int64_t bytes) {
      const int64_t here = at;
      at += (bytes + 15) / 16 * 16;
      return here;
    };
    node = take(4 * B);
    first = take(4 * B);
    bscore = take(4 * B);
    lse = take(4 * B);
    off = take(4 * (B + 1));
    sel_key = take(4 * K);
    sel_pos = take(4 * K);
    keys = take(4 * shared_keys);
    total = at;
  }
};

struct SharedPlan {
  bool shared_keys;       // the B * V keys live in shared memory (else in a global workspace)
  int64_t dynamic_bytes;  // the launch's dynamic shared memory
  bool fits;              // dynamic + static within the device's opt-in maximum
};

// Where the keys go for B beams, beam size K and vocabulary V: shared memory when the whole layout
// fits both the device (optin_bytes per block, less the kernel's static_bytes) and key_budget_bytes.
inline SharedPlan plan_shared(int64_t B, int64_t K, int64_t V, int64_t static_bytes, int64_t optin_bytes,
                              int64_t key_budget_bytes) {
  const int64_t room = optin_bytes - static_bytes;
  const bool shared_keys = Layout(B, K, B * V).total <= std::min(room, key_budget_bytes);
  const int64_t dynamic = Layout(B, K, shared_keys ? B * V : 0).total;
  return {shared_keys, dynamic, dynamic <= room};
}

// The value to raise cudaFuncAttributeMaxDynamicSharedMemorySize to before a launch with
// dynamic_bytes, or 0 when no opt-in is needed: static + dynamic within the 48 KB default and the
// dynamic size within the function's current limit (current_max_dynamic: cudaFuncAttributes'
// maxDynamicSharedSizeBytes). Never lowers a limit an earlier launch raised.
inline int64_t dynamic_optin_bytes(int64_t dynamic_bytes, int64_t static_bytes, int64_t current_max_dynamic) {
  if (dynamic_bytes + static_bytes <= kDefaultSharedBytes && dynamic_bytes <= current_max_dynamic) return 0;
  return std::max(dynamic_bytes, current_max_dynamic);
}

// Blocks of a launch whose keys live in a global workspace, one slot of slot_bytes per block (blocks
// stride over the users): at most one per user, at most blocks_per_sm per SM (more only queue), and
// never more than budget_bytes of workspace in all, except the single block every launch needs.
inline int64_t workspace_grid(int64_t users, int64_t slot_bytes, int64_t budget_bytes, int64_t sms,
                              int64_t blocks_per_sm = 4) {
  const int64_t by_budget = slot_bytes > 0 ? budget_bytes / slot_bytes : users;
  const int64_t grid = std::min({users, by_budget, std::max<int64_t>(sms, 1) * blocks_per_sm});
  return std::max<int64_t>(grid, 1);
}

}  // namespace genrec::beam_step_launch

#undef GENREC_LAUNCH_HD
