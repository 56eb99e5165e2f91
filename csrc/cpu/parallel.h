// parallel_chunks: the CPU kernels' parallel loop, robust to a busy neighbour.
//
// at::parallel_for is an OpenMP region: the range is split into one piece per thread, and the
// call returns only when every thread of the team has finished its piece. When another process
// holds one of the cores, the thread that shares that core runs its piece late (after the
// scheduler's time slice, milliseconds) and the whole call waits for it; a beam step that takes
// 1 ms alone then takes several (issue 20; bench/results/cpu-threads/NOTES.md).
//
// Here the range is cut into more chunks than threads, the calling thread takes chunks from a
// shared counter at once, and helpers from torch's inter-op pool (at::launch) take chunks too as
// soon as they run. The caller waits only for chunks a helper has actually claimed, never for a
// helper to start: when a helper is off its core, the caller simply does its share. A helper
// that starts after the last chunk was claimed finds nothing to do and touches nothing but the
// shared counter (kept alive by its shared_ptr). Thread count: at::get_num_threads(), so
// torch.set_num_threads / --threads / run.threads decide it as before.
//
// GENREC_CPU_PARALLEL=openmp brings back the previous behaviour (at::parallel_for), so that
// `genrec bench threads` can measure both in the same tree.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>

namespace genrec::cpu {

inline bool openmp_regions_requested() {
  static const bool requested = [] {
    const char* value = std::getenv("GENREC_CPU_PARALLEL");
    return value != nullptr && std::string_view(value) == "openmp";
  }();
  return requested;
}

// fn(begin, end) over [0, n) in chunks of at least `grain` items (the last may be shorter), each
// chunk exactly once, on the calling thread and up to at::get_num_threads() - 1 helpers. Runs
// fn(0, n) on the calling thread when n <= grain, with one thread, or inside a parallel region.
// The first exception thrown by fn is rethrown after every claimed chunk has finished.
template <typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (openmp_regions_requested()) {
    at::parallel_for(0, n, grain, fn);
    return;
  }
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  // Four chunks per thread: a late helper's share is picked up by the others in small pieces.
  const int64_t wanted = std::min<int64_t>((n + grain - 1) / grain, 4 * threads);
  const int64_t chunk = (n + wanted - 1) / wanted;

  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> finished{0};
    int64_t chunks = 0;
    std::mutex mutex;
    std::condition_variable all_finished;
    std::exception_ptr error;
  };
  auto shared = std::make_shared<Shared>();
  shared->chunks = (n + chunk - 1) / chunk;
  const int64_t chunks = shared->chunks;

  // Runs chunks while any are unclaimed. `fn` is only touched for a claimed chunk, and the caller
  // does not return before every claimed chunk has finished, so the reference stays valid.
  auto take_chunks = [n, chunk, chunks, &fn](Shared& s) {
    for (int64_t c = s.next.fetch_add(1); c < chunks; c = s.next.fetch_add(1)) {
      try {
        fn(c * chunk, std::min(n, (c + 1) * chunk));
      } catch (...) {
        std::lock_guard<std::mutex> lock(s.mutex);
        if (!s.error) s.error = std::current_exception();
      }
      if (s.finished.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.all_finished.notify_all();
      }
    }
  };
  const int64_t helpers = std::min(threads, chunks) - 1;
  for (int64_t h = 0; h < helpers; ++h) at::launch([shared, take_chunks] { take_chunks(*shared); });
  take_chunks(*shared);
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_finished.wait(lock, [&] { return shared->finished.load() == chunks; });
  if (shared->error) std::rethrow_exception(shared->error);
}

}  // namespace genrec::cpu
