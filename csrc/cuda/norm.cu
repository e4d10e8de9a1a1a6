// Batch normalisation over axis 1 of an (N, C, L) view, forward (train / eval) and backward.
//
// Training statistics: the N*L values of a channel are cut into `splits` contiguous chunks,
// one block each (so small-C layers still fill the GPU). A block computes its chunk's mean
// and sum of squared deviations in two passes (exact for its chunk; the second pass reads
// from L2), and bn_finalize merges the chunks with Chan's parallel formula in double.
// The element-wise passes are separate, fully parallel kernels.
#include "common.cuh"

namespace fc {

__device__ __forceinline__ void chunk_range(int M, int splits, int s, int& b, int& e) {
  const int per = (M + splits - 1) / splits;
  b = min(M, s * per);
  e = min(M, b + per);
}

// part[(c * splits + s) * 2 + {0,1}] = (chunk mean, chunk M2)
__global__ void __launch_bounds__(kThreads)
bn_stats_partial(const float* __restrict__ x, float* __restrict__ part, int N, int C, int L,
                 int splits) {
  __shared__ float red[kThreads / 32];
  const int c = blockIdx.x, s = blockIdx.y;
  int b, e;
  chunk_range(N * L, splits, s, b, e);
  float sum = 0.f;
  for (int j = b + threadIdx.x; j < e; j += blockDim.x) {
    const int n = j / L;
    sum += x[(n * C + c) * L + (j - n * L)];
  }
  sum = block_sum(sum, red);
  const float mean = e > b ? sum / (float)(e - b) : 0.f;
  float m2 = 0.f;
  for (int j = b + threadIdx.x; j < e; j += blockDim.x) {
    const int n = j / L;
    const float d = x[(n * C + c) * L + (j - n * L)] - mean;
    m2 = fmaf(d, d, m2);
  }
  m2 = block_sum(m2, red);
  if (threadIdx.x == 0) {
    part[(c * splits + s) * 2] = mean;
    part[(c * splits + s) * 2 + 1] = m2;
  }
}

// Merges the chunks of each channel -> mean, biased var, and the affine map
// y = (x - mean) * scale + shift with scale = w * invstd, shift = b.
__global__ void __launch_bounds__(kThreads)
bn_stats_finalize(const float* __restrict__ part, const float* __restrict__ w,
                  const float* __restrict__ bias, float* __restrict__ mean_out,
                  float* __restrict__ var_out, float* __restrict__ coef, int N, int C, int L,
                  int splits, float eps) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int M = N * L;
  double n = 0, mean = 0, m2 = 0;
  for (int s = 0; s < splits; ++s) {
    int b, e;
    chunk_range(M, splits, s, b, e);
    const double nb = e - b;
    if (nb == 0) continue;
    const double mb = part[(c * splits + s) * 2], m2b = part[(c * splits + s) * 2 + 1];
    // __drcp_rn: a double division's slow-path subroutine would spill registers.
    const double nt = n + nb, delta = mb - mean, f = nb * __drcp_rn(nt);
    mean += delta * f;
    m2 += m2b + delta * delta * n * f;
    n = nt;
  }
  const double var = m2 * __drcp_rn((double)M);
  const double invstd = rsqrt(var + (double)eps);
  mean_out[c] = (float)mean;
  var_out[c] = (float)var;
  coef[2 * c] = (float)(w[c] * invstd);
  coef[2 * c + 1] = bias[c];
}

// y = (x - mean[c]) * coef[2c] + coef[2c+1]; vec = 1 when L % 4 == 0 and x, y are 16-byte
// aligned, so a float4 never straddles two channels.
__global__ void __launch_bounds__(kThreads)
bn_apply(const float* __restrict__ x, const float* __restrict__ mean,
         const float* __restrict__ coef, float* __restrict__ y, int N, int C, int L, int vec) {
  const int stride = gridDim.x * blockDim.x;
  const int i0 = blockIdx.x * blockDim.x + threadIdx.x;
  if (vec) {
    const int n4 = N * C * L / 4, L4 = L / 4;
    for (int i = i0; i < n4; i += stride) {
      const int c = (i / L4) % C;
      const float m = mean[c], a = coef[2 * c], b = coef[2 * c + 1];
      float4 v = reinterpret_cast<const float4*>(x)[i];
      v.x = fmaf(v.x - m, a, b); v.y = fmaf(v.y - m, a, b);
      v.z = fmaf(v.z - m, a, b); v.w = fmaf(v.w - m, a, b);
      reinterpret_cast<float4*>(y)[i] = v;
    }
    return;
  }
  for (int i = i0; i < N * C * L; i += stride) {
    const int c = (i / L) % C;
    y[i] = fmaf(x[i] - mean[c], coef[2 * c], coef[2 * c + 1]);
  }
}

// Eval mode: coef from the running statistics.
__global__ void __launch_bounds__(kThreads)
bn_eval_coef(const float* __restrict__ var, const float* __restrict__ w,
             const float* __restrict__ bias, float* __restrict__ coef, int C, float eps) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  coef[2 * c] = (float)((double)w[c] * rsqrt((double)var[c] + (double)eps));
  coef[2 * c + 1] = bias[c];
}

// part[(c * splits + s) * 2 + {0,1}] = chunk sums of gy and gy * (x - mean) * invstd.
__global__ void __launch_bounds__(kThreads)
bn_bwd_partial(const float* __restrict__ gy, const float* __restrict__ x,
               const float* __restrict__ mean, const float* __restrict__ invstd,
               float* __restrict__ part, int N, int C, int L, int splits) {
  __shared__ float red[kThreads / 32];
  const int c = blockIdx.x, s = blockIdx.y;
  int b, e;
  chunk_range(N * L, splits, s, b, e);
  const float m = mean[c], is = invstd[c];
  float sg = 0.f, sgx = 0.f;
  for (int j = b + threadIdx.x; j < e; j += blockDim.x) {
    const int n = j / L;
    const int o = (n * C + c) * L + (j - n * L);
    const float g = gy[o];
    sg += g;
    sgx = fmaf(g, (x[o] - m) * is, sgx);
  }
  sg = block_sum(sg, red);
  sgx = block_sum(sgx, red);
  if (threadIdx.x == 0) {
    part[(c * splits + s) * 2] = sg;
    part[(c * splits + s) * 2 + 1] = sgx;
  }
}

// gb, gw and the coefficients of gx = k1 * gy + k2 * (x - mean) + k3:
// training: k1 = w*invstd, k2 = -k1*invstd*gw/M, k3 = -k1*gb/M; eval: k2 = k3 = 0.
__global__ void __launch_bounds__(kThreads)
bn_bwd_finalize(const float* __restrict__ part, const float* __restrict__ w,
                const float* __restrict__ invstd, float* __restrict__ gw,
                float* __restrict__ gb, float* __restrict__ coef, int N, int C, int L,
                int splits, int training) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double sg = 0, sgx = 0;
  for (int s = 0; s < splits; ++s) {
    sg += part[(c * splits + s) * 2];
    sgx += part[(c * splits + s) * 2 + 1];
  }
  gb[c] = (float)sg;
  gw[c] = (float)sgx;
  const double M = (double)N * L, k1 = (double)w[c] * invstd[c];
  coef[3 * c] = (float)k1;
  coef[3 * c + 1] = training ? (float)(-k1 * invstd[c] * sgx / M) : 0.f;
  coef[3 * c + 2] = training ? (float)(-k1 * sg / M) : 0.f;
}

__global__ void __launch_bounds__(kThreads)
bn_bwd_apply(const float* __restrict__ gy, const float* __restrict__ x,
             const float* __restrict__ mean, const float* __restrict__ coef,
             float* __restrict__ gx, int N, int C, int L, int vec) {
  const int stride = gridDim.x * blockDim.x;
  const int i0 = blockIdx.x * blockDim.x + threadIdx.x;
  if (vec) {
    const int n4 = N * C * L / 4, L4 = L / 4;
    for (int i = i0; i < n4; i += stride) {
      const int c = (i / L4) % C;
      const float m = mean[c], k1 = coef[3 * c], k2 = coef[3 * c + 1], k3 = coef[3 * c + 2];
      const float4 g = reinterpret_cast<const float4*>(gy)[i];
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      reinterpret_cast<float4*>(gx)[i] =
          make_float4(fmaf(k1, g.x, fmaf(k2, v.x - m, k3)), fmaf(k1, g.y, fmaf(k2, v.y - m, k3)),
                      fmaf(k1, g.z, fmaf(k2, v.z - m, k3)), fmaf(k1, g.w, fmaf(k2, v.w - m, k3)));
    }
    return;
  }
  for (int i = i0; i < N * C * L; i += stride) {
    const int c = (i / L) % C;
    gx[i] = fmaf(coef[3 * c], gy[i], fmaf(coef[3 * c + 1], x[i] - mean[c], coef[3 * c + 2]));
  }
}

}  // namespace fc
