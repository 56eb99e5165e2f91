// build_trie on the CPU: the decoding index of a set of unique semantic IDs.
//
// Rows of codes [N, L] are sorted lexicographically; node ids at every depth then follow that
// order, so the children of a node are one contiguous run of node ids at the next depth (CSR:
// row_ptr[d][s] .. row_ptr[d][s + 1]) with ascending tokens, and the leaves (depth L) are the
// sorted items. When an ID fits in 64 bits (sum over levels of bit_width(V_t - 1)), the rows are
// packed into keys (first column most significant) and sorted by a parallel LSD radix sort, which
// is stable, so duplicate IDs end up adjacent with the smaller item first; otherwise a stable
// comparison sort of row indices does the same. One sequential pass over the sorted rows then
// emits every node: a row opens a new node at each depth below the first level where it differs
// from the previous row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <limits>
#include <numeric>
#include <sstream>
#include <vector>

namespace genrec::cpu {
namespace {

constexpr int64_t kMaxLevels = 64;

// Ascending stable LSD radix sort of (keys, idx) by the low `bits` bits of keys, 8 bits a pass.
// Passes whose digit is the same for every key are skipped.
void radix_sort(std::vector<uint64_t>& keys, std::vector<int32_t>& idx, int bits) {
  const int64_t n = static_cast<int64_t>(keys.size());
  std::vector<uint64_t> keys_tmp(keys.size());
  std::vector<int32_t> idx_tmp(idx.size());
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 65536 + 1));
  const int64_t chunk = (n + chunks - 1) / chunks;
  std::vector<std::array<int64_t, 256>> counts(chunks);
  for (int shift = 0; shift < bits; shift += 8) {
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        auto& h = counts[c];
        h.fill(0);
        const int64_t end = std::min(n, (c + 1) * chunk);
        for (int64_t i = c * chunk; i < end; ++i) ++h[(keys[i] >> shift) & 0xFF];
      }
    });
    // Exclusive offsets: digit-major, chunk-minor, which keeps the sort stable.
    int64_t total = 0;
    bool one_digit = false;
    for (int d = 0; d < 256; ++d) {
      int64_t digit_total = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t k = counts[c][d];
        counts[c][d] = total;
        total += k;
        digit_total += k;
      }
      one_digit = one_digit || digit_total == n;
    }
    if (one_digit) continue;  // every key has this digit: the pass would not move anything
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        auto& off = counts[c];
        const int64_t end = std::min(n, (c + 1) * chunk);
        for (int64_t i = c * chunk; i < end; ++i) {
          const int64_t dst = off[(keys[i] >> shift) & 0xFF]++;
          keys_tmp[dst] = keys[i];
          idx_tmp[dst] = idx[i];
        }
      }
    });
    keys.swap(keys_tmp);
    idx.swap(idx_tmp);
  }
}

std::vector<at::Tensor> build_trie_cpu(const at::Tensor& codes_in, at::IntArrayRef level_sizes) {
  TORCH_CHECK(codes_in.dim() == 2, "build_trie: codes must be 2-D [num_items, levels], got shape ",
              codes_in.sizes());
  TORCH_CHECK(codes_in.scalar_type() == at::kLong || codes_in.scalar_type() == at::kInt,
              "build_trie: codes must be int64 or int32, got ", codes_in.scalar_type());
  const int64_t N = codes_in.size(0), L = codes_in.size(1);
  TORCH_CHECK(L >= 1 && L <= kMaxLevels, "build_trie: codes must have 1 to ", kMaxLevels, " levels, got ", L);
  TORCH_CHECK(static_cast<int64_t>(level_sizes.size()) == L, "build_trie: ", L,
              " code columns but level_sizes has ", level_sizes.size(), " entries");
  TORCH_CHECK(N < std::numeric_limits<int32_t>::max(), "build_trie: at most 2^31 - 2 items, got ", N);
  for (int64_t t = 0; t < L; ++t) {
    TORCH_CHECK(level_sizes[t] >= 1 && level_sizes[t] <= std::numeric_limits<int32_t>::max(),
                "build_trie: level_sizes[", t, "] must be in [1, 2^31 - 1], got ", level_sizes[t]);
  }
  const at::Tensor codes = codes_in.to(at::kCPU, at::kLong).contiguous();
  const int64_t* cp = codes.data_ptr<int64_t>();

  // Bits of each level and whether a whole ID packs into one 64-bit key.
  std::vector<int> bits(L), shift(L);
  int total_bits = 0;
  for (int64_t t = L - 1; t >= 0; --t) {
    bits[t] = static_cast<int>(std::bit_width(static_cast<uint64_t>(level_sizes[t] - 1)));
    shift[t] = total_bits;
    total_bits += bits[t];
  }
  const bool packed = total_bits <= 64;

  // Range check (reports the first bad row) and packing, in parallel.
  std::vector<uint64_t> keys(packed ? N : 0);
  std::atomic<int64_t> first_bad{N};
  at::parallel_for(0, N, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      uint64_t key = 0;
      bool ok = true;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t c = cp[i * L + t];
        ok = ok && c >= 0 && c < level_sizes[t];
        if (packed && bits[t] > 0) key |= static_cast<uint64_t>(c) << shift[t];
      }
      if (packed) keys[i] = key;
      if (!ok) {
        int64_t cur = first_bad.load();
        while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
        }
      }
    }
  });
  if (first_bad.load() < N) {
    const int64_t i = first_bad.load();
    for (int64_t t = 0; t < L; ++t) {
      const int64_t c = cp[i * L + t];
      TORCH_CHECK(c >= 0 && c < level_sizes[t], "build_trie: item ", i, " has code ", c, " at level ", t,
                  ", outside [0, ", level_sizes[t], ")");
    }
  }

  // Sorted order of the rows.
  std::vector<int32_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  if (packed) {
    radix_sort(keys, order, total_bits);
  } else {
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return std::lexicographical_compare(cp + a * L, cp + (a + 1) * L, cp + b * L, cp + (b + 1) * L);
    });
  }
  auto token = [&](int64_t p, int64_t t) -> int64_t {
    if (packed) return static_cast<int64_t>((keys[p] >> shift[t]) & ((uint64_t{1} << bits[t]) - 1));
    return cp[static_cast<int64_t>(order[p]) * L + t];
  };

  // first_diff[p]: the first level where sorted row p differs from row p - 1 (0 for p = 0).
  std::array<int, 65> level_of_bit{};
  for (int64_t t = 0; t < L; ++t)
    for (int b = 0; b < bits[t]; ++b) level_of_bit[shift[t] + b] = static_cast<int>(t);
  std::vector<uint8_t> first_diff(N, 0);
  std::atomic<int64_t> dup_at{N};
  at::parallel_for(1, std::max<int64_t>(N, 1), 4096, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int level = static_cast<int>(L);
      if (packed) {
        const uint64_t diff = keys[p] ^ keys[p - 1];
        if (diff != 0) level = level_of_bit[63 - std::countl_zero(diff)];
      } else {
        const int64_t* a = cp + static_cast<int64_t>(order[p - 1]) * L;
        const int64_t* b = cp + static_cast<int64_t>(order[p]) * L;
        for (int64_t t = 0; t < L; ++t) {
          if (a[t] != b[t]) {
            level = static_cast<int>(t);
            break;
          }
        }
      }
      if (level == L) {
        int64_t cur = dup_at.load();
        while (p < cur && !dup_at.compare_exchange_weak(cur, p)) {
        }
      }
      first_diff[p] = static_cast<uint8_t>(level);
    }
  });
  if (dup_at.load() < N) {
    const int64_t p = dup_at.load();
    std::ostringstream id;
    for (int64_t t = 0; t < L; ++t) id << (t ? ", " : "[") << cp[static_cast<int64_t>(order[p]) * L + t];
    id << "]";
    TORCH_CHECK(false, "build_trie: codes must be unique, but items ", order[p - 1], " and ", order[p],
                " share the ID ", id.str());
  }

  // Nodes per depth: depth d >= 1 opens a node at row p when first_diff[p] < d (and at p = 0).
  std::vector<int64_t> opened_at_level(L + 1, 0);  // rows whose first difference is at level t
  for (int64_t p = 1; p < N; ++p) ++opened_at_level[first_diff[p]];
  std::vector<int64_t> nodes(L + 1, 0);
  nodes[0] = 1;
  int64_t running = N > 0 ? 1 : 0;
  for (int64_t d = 1; d <= L; ++d) {
    running += opened_at_level[d - 1];
    nodes[d] = running;
  }

  const auto i32 = at::TensorOptions().dtype(at::kInt);
  std::vector<at::Tensor> row_ptr(L), child_tokens(L);
  std::vector<int32_t*> rp(L), ct(L);
  for (int64_t d = 0; d < L; ++d) {
    row_ptr[d] = at::empty({nodes[d] + 1}, i32);
    child_tokens[d] = at::empty({nodes[d + 1]}, i32);
    rp[d] = row_ptr[d].data_ptr<int32_t>();
    ct[d] = child_tokens[d].data_ptr<int32_t>();
  }
  std::vector<int32_t> count(L + 1, 0);
  count[0] = 1;
  rp[0][0] = 0;
  for (int64_t p = 0; p < N; ++p) {
    for (int64_t d = first_diff[p] + 1; d <= L; ++d) {
      const int32_t id = count[d]++;
      ct[d - 1][id] = static_cast<int32_t>(token(p, d - 1));
      if (d < L) rp[d][id] = count[d + 1];  // its first child is the next node opened at depth d + 1
    }
  }
  for (int64_t d = 0; d < L; ++d) rp[d][nodes[d]] = static_cast<int32_t>(nodes[d + 1]);

  at::Tensor leaf_items = at::empty({N}, i32);
  std::copy(order.begin(), order.end(), leaf_items.data_ptr<int32_t>());
  std::vector<at::Tensor> out;
  out.reserve(1 + 2 * L);
  out.push_back(leaf_items);
  for (int64_t d = 0; d < L; ++d) {
    out.push_back(row_ptr[d]);
    out.push_back(child_tokens[d]);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CPU, m) { m.impl("build_trie", &build_trie_cpu); }

}  // namespace genrec::cpu
