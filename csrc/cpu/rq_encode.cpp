// rq_encode on the CPU.
//
// Each task takes a block of rows and walks the levels: a register-blocked
// micro-kernel computes <r, c> for 4 rows x 64 codewords at a time from a
// codebook packed as tiles of [D, 64] (contiguous along the tile's codewords,
// so the inner loop is plain vector FMAs over one contiguous stream), turns it into ||c||^2 - 2<r, c> (||r||^2 is the same for every
// codeword) and keeps a per-lane running argmin. Scanning K in ascending order
// with a strict "<" and breaking lane ties by index keeps the smallest k.
//
// Codeword tiles are the outer loop and the block's row tiles the inner one, so
// a tile (64 codewords x D) is read from memory once per block of 64 rows and
// then served from L2. Packing each tile contiguously matters as much: in a
// plain [D, K] transpose, a tile's rows sit K floats apart, and at K=1024 (a
// 4 KB stride) they all fall into a few cache sets and evict one another. Every
// row still sees the tiles in ascending order and every dot product sums over d
// in the same order, so the codes are bit for bit those of the plain layout.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../rq_encode_checks.h"
#include "parallel.h"
#include "vectorize.h"

namespace genrec::cpu {
namespace {

constexpr int kRows = 4;                 // rows per micro-tile
constexpr int kVecs = 4;                 // vectors per codeword tile
constexpr int kTile = kVecs * kLanes;    // codewords per micro-tile
constexpr int64_t kBlockRows = 64;       // rows per parallel task
constexpr int64_t kMinTaskFlops = int64_t{1} << 23;  // ~0.1 ms of one core here: the least worth a thread

struct Level {
  const float* tiles;       // [Kp / kTile, D, kTile], padded codewords are zero
  const float* norms;       // [Kp], padded codewords are +inf
  const float* rows;        // [K, D]
};

// Per-row running argmin state, kLanes values and indices a row, kept in plain
// (unaligned) scratch and moved through memcpy like every other vector load.
struct BestScratch {
  float* value;    // [rows, kLanes]
  int32_t* index;  // [rows, kLanes]
};

// Encodes `rows` rows of x (row-major [rows, D]) into out ([rows, L]).
// `res` is scratch of at least round_up(rows, kRows) * D floats, `best` of round_up(rows, kRows) rows.
GENREC_CPU_CLONES
void encode_block(const float* x, int64_t rows, int64_t D, const Level* levels, int64_t L, int64_t Kp,
                  float* res, BestScratch best, int64_t* out) {
  const int64_t padded = round_up(rows, kRows);
  std::memcpy(res, x, sizeof(float) * rows * D);
  std::memset(res + rows * D, 0, sizeof(float) * (padded - rows) * D);
  const float inf = std::numeric_limits<float>::infinity();

  for (int64_t l = 0; l < L; ++l) {
    const Level& lv = levels[l];
    std::fill(best.value, best.value + padded * kLanes, inf);
    std::fill(best.index, best.index + padded * kLanes, 0);
    for (int64_t k0 = 0; k0 < Kp; k0 += kTile) {
      const float* ct = lv.tiles + k0 * D;  // tile k0 / kTile
      for (int64_t r0 = 0; r0 < padded; r0 += kRows) {
        const float* rr = res + r0 * D;
        vfloat acc[kRows][kVecs];
        for (int r = 0; r < kRows; ++r)
          for (int j = 0; j < kVecs; ++j) acc[r][j] = vfloat{};
        for (int64_t d = 0; d < D; ++d) {
          vfloat c[kVecs];
          for (int j = 0; j < kVecs; ++j) c[j] = load_vf(ct + d * kTile + j * kLanes);
          for (int r = 0; r < kRows; ++r) {
            const float a = rr[r * D + d];
            for (int j = 0; j < kVecs; ++j) acc[r][j] += a * c[j];
          }
        }
        for (int r = 0; r < kRows; ++r) {
          float* value = best.value + (r0 + r) * kLanes;
          int32_t* index = best.index + (r0 + r) * kLanes;
          vfloat best_v = load_vf(value);
          vint best_i;
          std::memcpy(&best_i, index, sizeof(best_i));
          for (int j = 0; j < kVecs; ++j) {
            const vfloat dist = load_vf(lv.norms + k0 + j * kLanes) - 2.0f * acc[r][j];
            const vint better = dist < best_v;
            best_v = better ? dist : best_v;
            best_i = better ? iota_vi(static_cast<int32_t>(k0 + j * kLanes)) : best_i;
          }
          std::memcpy(value, &best_v, sizeof(best_v));
          std::memcpy(index, &best_i, sizeof(best_i));
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* value = best.value + r * kLanes;
      const int32_t* index = best.index + r * kLanes;
      float bv = value[0];
      int32_t bi = index[0];
      for (int lane = 1; lane < kLanes; ++lane) {
        const float v = value[lane];
        const int32_t i = index[lane];
        if (v < bv || (v == bv && i < bi)) {
          bv = v;
          bi = i;
        }
      }
      out[r * L + l] = bi;
      float* row = res + r * D;
      const float* code = lv.rows + static_cast<int64_t>(bi) * D;
      for (int64_t d = 0; d < D; ++d) row[d] -= code[d];
    }
  }
}

void rq_encode_out_cpu(const at::Tensor& x_in, const at::Tensor& codebooks_in, at::Tensor& out) {
  check_rq_encode_out(x_in, codebooks_in, out);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const at::Tensor codebooks = codebooks_in.to(at::kFloat).contiguous();
  const int64_t N = x.size(0), D = x.size(1), L = codebooks.size(0), K = codebooks.size(1);
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max(), "rq_encode: K too large");
  TORCH_CHECK(at::isfinite(x).all().item<bool>(), "rq_encode: x contains NaN or Inf");
  TORCH_CHECK(at::isfinite(codebooks).all().item<bool>(), "rq_encode: codebooks contain NaN or Inf");
  if (N == 0) return;

  // Codebooks packed as [L, Kp / kTile, D, kTile] (zero padded) and their
  // squared norms [L, Kp] (+inf padded, so padding never wins).
  const int64_t Kp = round_up(K, kTile);
  at::Tensor padded = at::zeros({L, Kp, D}, x.options());
  padded.narrow(1, 0, K).copy_(codebooks);
  const at::Tensor tiles = padded.view({L, Kp / kTile, kTile, D}).transpose(2, 3).contiguous();
  at::Tensor norms = at::full({L, Kp}, std::numeric_limits<float>::infinity(), x.options());
  norms.narrow(1, 0, K).copy_(codebooks.pow(2).sum(-1));

  std::vector<Level> levels(L);
  for (int64_t l = 0; l < L; ++l) {
    levels[l] = Level{tiles.data_ptr<float>() + l * Kp * D, norms.data_ptr<float>() + l * Kp,
                      codebooks.data_ptr<float>() + l * K * D};
  }
  const float* xp = x.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  const int64_t blocks = (N + kBlockRows - 1) / kBlockRows;
  // Each chunk holds at least kMinTaskFlops of work: waking a sleeping helper thread costs tens
  // of microseconds, so a call with only a few small blocks runs on the calling thread.
  const int64_t block_flops = 2 * kBlockRows * L * Kp * D;
  const int64_t grain = std::max<int64_t>(1, (kMinTaskFlops + block_flops - 1) / block_flops);
  parallel_chunks(blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> res(static_cast<size_t>(round_up(kBlockRows, kRows) * D));
    std::vector<float> best_value(static_cast<size_t>(round_up(kBlockRows, kRows) * kLanes));
    std::vector<int32_t> best_index(best_value.size());
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row0 = b * kBlockRows;
      const int64_t rows = std::min(kBlockRows, N - row0);
      encode_block(xp + row0 * D, rows, D, levels.data(), L, Kp, res.data(),
                   BestScratch{best_value.data(), best_index.data()}, op + row0 * L);
    }
  });
}

at::Tensor rq_encode_cpu(const at::Tensor& x, const at::Tensor& codebooks) {
  check_rq_encode_args(x, codebooks);
  at::Tensor out = at::empty({x.size(0), codebooks.size(0)}, x.options().dtype(at::kLong));
  rq_encode_out_cpu(x, codebooks, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CPU, m) {
  m.impl("rq_encode", &rq_encode_cpu);
  m.impl("rq_encode_out", &rq_encode_out_cpu);
}

}  // namespace genrec::cpu
