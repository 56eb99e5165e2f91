// rq_encode on the CPU.
//
// Each task takes a block of rows and walks the levels: a register-blocked
// micro-kernel computes <r, c> for 4 rows x 64 codewords at a time from a
// [D, K] transposed codebook (contiguous along K, so the inner loop is plain
// vector FMAs), turns it into ||c||^2 - 2<r, c> (||r||^2 is the same for every
// codeword) and keeps a per-lane running argmin. Scanning K in ascending order
// with a strict "<" and breaking lane ties by index keeps the smallest k.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../rq_encode_checks.h"
#include "vectorize.h"

namespace genrec::cpu {
namespace {

constexpr int kRows = 4;                 // rows per micro-tile
constexpr int kVecs = 4;                 // vectors per codeword tile
constexpr int kTile = kVecs * kLanes;    // codewords per micro-tile
constexpr int64_t kBlockRows = 64;       // rows per parallel task

struct Level {
  const float* transposed;  // [D, Kp], padded codewords are zero
  const float* norms;       // [Kp], padded codewords are +inf
  const float* rows;        // [K, D]
};

// Encodes `rows` rows of x (row-major [rows, D]) into out ([rows, L]).
// `res` is scratch of at least round_up(rows, kRows) * D floats.
GENREC_CPU_CLONES
void encode_block(const float* x, int64_t rows, int64_t D, const Level* levels, int64_t L, int64_t Kp,
                  float* res, int64_t* out) {
  const int64_t padded = round_up(rows, kRows);
  std::memcpy(res, x, sizeof(float) * rows * D);
  std::memset(res + rows * D, 0, sizeof(float) * (padded - rows) * D);
  const float inf = std::numeric_limits<float>::infinity();

  for (int64_t l = 0; l < L; ++l) {
    const Level& lv = levels[l];
    for (int64_t r0 = 0; r0 < padded; r0 += kRows) {
      vfloat best_v[kRows];
      vint best_i[kRows];
      for (int r = 0; r < kRows; ++r) {
        best_v[r] = splat_vf(inf);
        best_i[r] = vint{};
      }
      const float* rr = res + r0 * D;
      for (int64_t k0 = 0; k0 < Kp; k0 += kTile) {
        vfloat acc[kRows][kVecs];
        for (int r = 0; r < kRows; ++r)
          for (int j = 0; j < kVecs; ++j) acc[r][j] = vfloat{};
        const float* ct = lv.transposed + k0;
        for (int64_t d = 0; d < D; ++d) {
          vfloat c[kVecs];
          for (int j = 0; j < kVecs; ++j) c[j] = load_vf(ct + d * Kp + j * kLanes);
          for (int r = 0; r < kRows; ++r) {
            const float a = rr[r * D + d];
            for (int j = 0; j < kVecs; ++j) acc[r][j] += a * c[j];
          }
        }
        for (int j = 0; j < kVecs; ++j) {
          const vfloat norm = load_vf(lv.norms + k0 + j * kLanes);
          const vint idx = iota_vi(static_cast<int32_t>(k0 + j * kLanes));
          for (int r = 0; r < kRows; ++r) {
            const vfloat dist = norm - 2.0f * acc[r][j];
            const vint better = dist < best_v[r];
            best_v[r] = better ? dist : best_v[r];
            best_i[r] = better ? idx : best_i[r];
          }
        }
      }
      for (int r = 0; r < kRows && r0 + r < rows; ++r) {
        float bv = best_v[r][0];
        int32_t bi = best_i[r][0];
        for (int lane = 1; lane < kLanes; ++lane) {
          const float v = best_v[r][lane];
          const int32_t i = best_i[r][lane];
          if (v < bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
          }
        }
        out[(r0 + r) * L + l] = bi;
        float* row = res + (r0 + r) * D;
        const float* code = lv.rows + static_cast<int64_t>(bi) * D;
        for (int64_t d = 0; d < D; ++d) row[d] -= code[d];
      }
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

  // Codebooks transposed to [L, D, Kp] (zero padded) and their squared norms
  // [L, Kp] (+inf padded, so padding never wins).
  const int64_t Kp = round_up(K, kTile);
  at::Tensor transposed = at::zeros({L, D, Kp}, x.options());
  transposed.narrow(2, 0, K).copy_(codebooks.transpose(1, 2));
  at::Tensor norms = at::full({L, Kp}, std::numeric_limits<float>::infinity(), x.options());
  norms.narrow(1, 0, K).copy_(codebooks.pow(2).sum(-1));

  std::vector<Level> levels(L);
  for (int64_t l = 0; l < L; ++l) {
    levels[l] = Level{transposed.data_ptr<float>() + l * D * Kp, norms.data_ptr<float>() + l * Kp,
                      codebooks.data_ptr<float>() + l * K * D};
  }
  const float* xp = x.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  const int64_t blocks = (N + kBlockRows - 1) / kBlockRows;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> res(static_cast<size_t>(round_up(kBlockRows, kRows) * D));
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row0 = b * kBlockRows;
      const int64_t rows = std::min(kBlockRows, N - row0);
      encode_block(xp + row0 * D, rows, D, levels.data(), L, Kp, res.data(), op + row0 * L);
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
