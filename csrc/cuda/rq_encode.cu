// rq_encode on CUDA.
//
// One block of 256 threads owns 64 rows and walks the levels. For each level it
// streams the codebook in 64-codeword tiles; the block computes the 64 x 64
// tile of dot products like a small SGEMM (16-deep D chunks staged in shared
// memory, a 4 x 4 register micro-tile per thread), turns them into
// ||c||^2 - 2<r, c> and keeps a running (distance, index) minimum per row.
// Residuals are never stored: each staged chunk is rebuilt as
// x - c[0][code0] - c[1][code1] - ..., in the same order as the reference, from
// the codes already chosen (kept in shared memory), so no [N, D] workspace is
// needed whatever N is.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "../rq_encode_checks.h"

namespace genrec::cuda {
namespace {

constexpr int kTileRows = 64;
constexpr int kTileCodes = 64;
constexpr int kChunk = 16;
constexpr int kThreads = 256;
constexpr int kMicro = 4;  // 4 x 4 outputs per thread

__device__ __forceinline__ bool better(float d, int k, float bd, int bk) {
  return d < bd || (d == bd && k < bk);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    rq_encode_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ codebooks,
                     const float* __restrict__ norms, int64_t* __restrict__ out, int64_t N, int D, int L,
                     int K) {
  __shared__ __align__(16) float rs[kChunk][kTileRows + 4];   // residual chunk, transposed
  __shared__ __align__(16) float cs[kChunk][kTileCodes + 4];  // codeword chunk, transposed
  extern __shared__ int codes_s[];              // [kTileRows, L] codes chosen so far

  const int tid = threadIdx.x;
  const int tx = tid % 16;  // codeword group: columns tx*4 .. tx*4+3
  const int ty = tid / 16;  // row group: rows ty*4 .. ty*4+3
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  const float inf = __int_as_float(0x7f800000);

  for (int l = 0; l < L; ++l) {
    const scalar_t* cb_l = codebooks + static_cast<int64_t>(l) * K * D;
    float best_d[kMicro];
    int best_k[kMicro];
#pragma unroll
    for (int i = 0; i < kMicro; ++i) {
      best_d[i] = inf;
      best_k[i] = 0;
    }
    for (int k0 = 0; k0 < K; k0 += kTileCodes) {
      float acc[kMicro][kMicro];
#pragma unroll
      for (int i = 0; i < kMicro; ++i)
#pragma unroll
        for (int j = 0; j < kMicro; ++j) acc[i][j] = 0.f;

      for (int d0 = 0; d0 < D; d0 += kChunk) {
        // Stage kTileRows x kChunk residuals and kTileCodes x kChunk codewords.
        for (int e = tid; e < kTileRows * kChunk; e += kThreads) {
          const int r = e / kChunk, dd = e % kChunk;
          const int64_t row = row0 + r;
          const int d = d0 + dd;
          float v = 0.f;
          if (row < N && d < D) {
            v = static_cast<float>(x[row * D + d]);
            for (int lp = 0; lp < l; ++lp) {
              const int c = codes_s[r * L + lp];
              v -= static_cast<float>(codebooks[(static_cast<int64_t>(lp) * K + c) * D + d]);
            }
          }
          rs[dd][r] = v;
        }
        for (int e = tid; e < kTileCodes * kChunk; e += kThreads) {
          const int k = e / kChunk, dd = e % kChunk;
          const int d = d0 + dd;
          cs[dd][k] = (k0 + k < K && d < D) ? static_cast<float>(cb_l[static_cast<int64_t>(k0 + k) * D + d])
                                            : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int dd = 0; dd < kChunk; ++dd) {
          const float4 a = *reinterpret_cast<const float4*>(&rs[dd][ty * kMicro]);
          const float4 b = *reinterpret_cast<const float4*>(&cs[dd][tx * kMicro]);
          const float av[4] = {a.x, a.y, a.z, a.w};
          const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
          for (int i = 0; i < kMicro; ++i)
#pragma unroll
            for (int j = 0; j < kMicro; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
      }
#pragma unroll
      for (int j = 0; j < kMicro; ++j) {
        const int k = k0 + tx * kMicro + j;
        if (k < K) {
          const float nk = norms[static_cast<int64_t>(l) * K + k];
#pragma unroll
          for (int i = 0; i < kMicro; ++i) {
            const float dist = nk - 2.f * acc[i][j];
            if (better(dist, k, best_d[i], best_k[i])) {
              best_d[i] = dist;
              best_k[i] = k;
            }
          }
        }
      }
    }
    // The 16 threads sharing a row group are 16 consecutive lanes of one warp.
#pragma unroll
    for (int i = 0; i < kMicro; ++i) {
#pragma unroll
      for (int offset = 8; offset > 0; offset >>= 1) {
        const float od = __shfl_xor_sync(0xffffffffu, best_d[i], offset, 16);
        const int ok = __shfl_xor_sync(0xffffffffu, best_k[i], offset, 16);
        if (better(od, ok, best_d[i], best_k[i])) {
          best_d[i] = od;
          best_k[i] = ok;
        }
      }
    }
    if (tx == 0) {
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int r = ty * kMicro + i;
        codes_s[r * L + l] = best_k[i];
        if (row0 + r < N) out[(row0 + r) * L + l] = best_k[i];
      }
    }
    __syncthreads();
  }
}

void rq_encode_out_cuda(const at::Tensor& x_in, const at::Tensor& codebooks_in, at::Tensor& out) {
  check_rq_encode_out(x_in, codebooks_in, out);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor codebooks = codebooks_in.contiguous();
  const int64_t N = x.size(0), D = x.size(1), L = codebooks.size(0), K = codebooks.size(1);
  TORCH_CHECK(D <= std::numeric_limits<int>::max() && K <= std::numeric_limits<int>::max(),
              "rq_encode: D and K must fit in int32");
  TORCH_CHECK(L * kTileRows * static_cast<int64_t>(sizeof(int)) <= 32 * 1024,
              "rq_encode: too many levels (", L, ") for the CUDA kernel; at most 128");
  if (N == 0) return;
  const at::Tensor norms = codebooks.to(at::kFloat).pow(2).sum(-1).contiguous();  // [L, K]
  const dim3 grid(static_cast<unsigned>((N + kTileRows - 1) / kTileRows));
  const size_t smem = static_cast<size_t>(L) * kTileRows * sizeof(int);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "rq_encode_cuda", [&] {
    rq_encode_kernel<scalar_t><<<grid, kThreads, smem, stream>>>(
        x.data_ptr<scalar_t>(), codebooks.data_ptr<scalar_t>(), norms.data_ptr<float>(),
        out.data_ptr<int64_t>(), N, static_cast<int>(D), static_cast<int>(L), static_cast<int>(K));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor rq_encode_cuda(const at::Tensor& x, const at::Tensor& codebooks) {
  check_rq_encode_args(x, codebooks);
  at::Tensor out = at::empty({x.size(0), codebooks.size(0)}, x.options().dtype(at::kLong));
  rq_encode_out_cuda(x, codebooks, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(genrec, CUDA, m) {
  m.impl("rq_encode", &rq_encode_cuda);
  m.impl("rq_encode_out", &rq_encode_out_cuda);
}

}  // namespace genrec::cuda
