// Max, average and adaptive-average pooling, forward and backward, with PyTorch's
// semantics: max indices are flat h*W + w per plane (int64), the first in-window position
// is the default index, a later value wins if greater or NaN (so NaN propagates);
// ceil_mode is folded into P, Q by the caller; avg pooling clips windows to the padded
// input for the divisor (count_include_pad) and to the input for the sum; a window fully
// in the padding gives 0.
#include "common.cuh"

namespace fc {

__global__ void __launch_bounds__(kThreads)
max_pool_fwd(const float* __restrict__ x, float* __restrict__ y, long long* __restrict__ idx,
             int NC, int H, int W, int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
             int dh, int dw) {
  const int total = NC * P * Q;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int q = i % Q, p = (i / Q) % P, nc = i / (P * Q);
    int hs = p * sh - ph, ws = q * sw - pw;
    const int he = min(hs + (kh - 1) * dh + 1, H), we = min(ws + (kw - 1) * dw + 1, W);
    while (hs < 0) hs += dh;
    while (ws < 0) ws += dw;
    const float* xb = x + nc * H * W;
    float best = -__int_as_float(0x7f800000);  // -inf
    int bi = -1;  // stays -1 for a window with no input element (dilation can do that)
    for (int h = hs; h < he; h += dh)
      for (int w = ws; w < we; w += dw) {
        const float v = xb[h * W + w];
        if (bi < 0 || v > best || v != v) { best = v; bi = h * W + w; }
      }
    y[i] = best;
    if (idx) idx[i] = bi;
  }
}

// Scatter through the saved indices. Windows overlap when stride < kernel, so the adds are
// atomic into a zeroed gx (summation order, hence the last bits, may vary run to run).
__global__ void __launch_bounds__(kThreads)
max_pool_bwd(const float* __restrict__ gy, const long long* __restrict__ idx,
             float* __restrict__ gx, int NC, int HW, int PQ) {
  const int total = NC * PQ;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
    if (idx[i] >= 0) atomicAdd(gx + (i / PQ) * HW + (int)idx[i], gy[i]);
}

__device__ __forceinline__ float avg_divisor(int hs, int ws, int he, int we, int hs0, int ws0,
                                             int he0, int we0, int cip, int div_override) {
  if (div_override) return (float)div_override;
  return cip ? (float)((he0 - hs0) * (we0 - ws0)) : (float)((he - hs) * (we - ws));
}

__global__ void __launch_bounds__(kThreads)
avg_pool_fwd(const float* __restrict__ x, float* __restrict__ y, int NC, int H, int W, int P,
             int Q, int kh, int kw, int sh, int sw, int ph, int pw, int cip, int div_override) {
  const int total = NC * P * Q;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int q = i % Q, p = (i / Q) % P, nc = i / (P * Q);
    const int hs0 = p * sh - ph, ws0 = q * sw - pw;
    const int he0 = min(hs0 + kh, H + ph), we0 = min(ws0 + kw, W + pw);
    const int hs = max(hs0, 0), ws = max(ws0, 0), he = min(he0, H), we = min(we0, W);
    if (hs >= he || ws >= we) { y[i] = 0.f; continue; }
    const float* xb = x + nc * H * W;
    float s = 0.f;
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w) s += xb[h * W + w];
    y[i] = s / avg_divisor(hs, ws, he, we, hs0, ws0, he0, we0, cip, div_override);
  }
}

// Gather: each input element sums gy / divisor over the windows that contain it.
__global__ void __launch_bounds__(kThreads)
avg_pool_bwd(const float* __restrict__ gy, float* __restrict__ gx, int NC, int H, int W, int P,
             int Q, int kh, int kw, int sh, int sw, int ph, int pw, int cip, int div_override) {
  const int total = NC * H * W;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int w = i % W, h = (i / W) % H, nc = i / (H * W);
    const int hp = h + ph, wp = w + pw;
    const int p0 = hp < kh ? 0 : (hp - kh) / sh + 1, p1 = min(hp / sh + 1, P);
    const int q0 = wp < kw ? 0 : (wp - kw) / sw + 1, q1 = min(wp / sw + 1, Q);
    const float* gb = gy + nc * P * Q;
    float acc = 0.f;
    for (int p = p0; p < p1; ++p)
      for (int q = q0; q < q1; ++q) {
        const int hs0 = p * sh - ph, ws0 = q * sw - pw;
        const int he0 = min(hs0 + kh, H + ph), we0 = min(ws0 + kw, W + pw);
        const int hs = max(hs0, 0), ws = max(ws0, 0), he = min(he0, H), we = min(we0, W);
        // Reciprocal then multiply: an IEEE division here calls a slow-path subroutine
        // whose register save spills; the result differs from gy / d by at most 1 ulp.
        acc = fmaf(gb[p * Q + q],
                   __frcp_rn(avg_divisor(hs, ws, he, we, hs0, ws0, he0, we0, cip, div_override)),
                   acc);
      }
    gx[i] = acc;
  }
}

// Window [floor(i*size/out), ceil((i+1)*size/out)).
__device__ __forceinline__ int ad_start(int i, int size, int out) { return (i * size) / out; }
__device__ __forceinline__ int ad_end(int i, int size, int out) {
  return ((i + 1) * size + out - 1) / out;
}

__global__ void __launch_bounds__(kThreads)
adaptive_avg_fwd(const float* __restrict__ x, float* __restrict__ y, int NC, int H, int W,
                 int OH, int OW) {
  const int total = NC * OH * OW;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int q = i % OW, p = (i / OW) % OH, nc = i / (OH * OW);
    const int hs = ad_start(p, H, OH), he = ad_end(p, H, OH);
    const int ws = ad_start(q, W, OW), we = ad_end(q, W, OW);
    const float* xb = x + nc * H * W;
    float s = 0.f;
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w) s += xb[h * W + w];
    y[i] = s / (float)((he - hs) * (we - ws));
  }
}

// Outputs whose window holds row h: p in [floor(h*OH/H), ceil((h+1)*OH/H)).
__global__ void __launch_bounds__(kThreads)
adaptive_avg_bwd(const float* __restrict__ gy, float* __restrict__ gx, int NC, int H, int W,
                 int OH, int OW) {
  const int total = NC * H * W;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int w = i % W, h = (i / W) % H, nc = i / (H * W);
    const int p0 = (h * OH) / H, p1 = min(((h + 1) * OH + H - 1) / H, OH);
    const int q0 = (w * OW) / W, q1 = min(((w + 1) * OW + W - 1) / W, OW);
    const float* gb = gy + nc * OH * OW;
    float acc = 0.f;
    for (int p = p0; p < p1; ++p) {
      const int hs = ad_start(p, H, OH), he = ad_end(p, H, OH);
      if (h < hs || h >= he) continue;
      for (int q = q0; q < q1; ++q) {
        const int ws = ad_start(q, W, OW), we = ad_end(q, W, OW);
        if (w < ws || w >= we) continue;
        acc = fmaf(gb[p * OW + q], __frcp_rn((float)((he - hs) * (we - ws))), acc);
      }
    }
    gx[i] = acc;
  }
}

}  // namespace fc
