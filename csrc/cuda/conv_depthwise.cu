// Depthwise convolution (groups == C, K = m*C): one input channel per filter, so there
// is no channel reduction to tile and the GEMM-shaped kernels would be mostly padding.
// Forward and backward-data give each thread one output element (consecutive threads
// take consecutive q, so loads along a row coalesce); the weight gradient gives each
// block one (filter, tap) and reduces over N*P*Q. Top/left padding is passed;
// bottom/right is implied by the output size. Compile-checked only: these kernels have
// not run on a GPU. The receptive-field walks are shared with conv_direct.cu.
#include "common.cuh"
#include "conv_taps.cuh"

namespace fc {

#define FC_DW_PARAMS                                                                    \
  int N, int C, int H, int W, int K, int P, int Q, int R, int S, int sh, int sw, int ph, \
      int pw, int dh, int dw

// y[n,k,p,q] = bias[k] + sum_{r,s} w[k,0,r,s] x[n, k/m, p*sh - ph + r*dh, q*sw - pw + s*dw]
__global__ void __launch_bounds__(kThreads)
depthwise_fwd(const float* __restrict__ x, const float* __restrict__ w,
              const float* __restrict__ bias, float* __restrict__ y, FC_DW_PARAMS) {
  const int total = N * K * P * Q;
  const int m = K / C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int q = i % Q, p = (i / Q) % P, k = (i / (P * Q)) % K, n = i / (K * P * Q);
    const int h0 = p * sh - ph, w0 = q * sw - pw;
    const float* xb = x + (n * C + k / m) * H * W;
    const float* wb = w + k * R * S;
    const float acc = window_dot(xb, wb, H, W, R, S, h0, w0, dh, dw, 0.f);
    y[i] = bias ? acc + bias[k] : acc;
  }
}

// gx[n,c,h,w] = sum over the channel's m filters and the taps (r, s) that reach (h, w).
// Gather form: no atomics, deterministic.
__global__ void __launch_bounds__(kThreads)
depthwise_bwd_data(const float* __restrict__ gy, const float* __restrict__ w,
                   float* __restrict__ gx, FC_DW_PARAMS) {
  const int total = N * C * H * W;
  const int m = K / C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int ww = i % W, h = (i / W) % H, c = (i / (H * W)) % C, n = i / (C * H * W);
    float acc = 0.f;
    for (int r = 0; r < R; ++r) {
      const int p = tap_source(h, ph, r * dh, sh, P);
      if (p < 0) continue;
      for (int s = 0; s < S; ++s) {
        const int q = tap_source(ww, pw, s * dw, sw, Q);
        if (q < 0) continue;
        for (int j = 0; j < m; ++j) {
          const int k = c * m + j;
          acc = fmaf(w[(k * R + r) * S + s], gy[((n * K + k) * P + p) * Q + q], acc);
        }
      }
    }
    gx[i] = acc;
  }
}

// gw[k,0,r,s] = sum_{n,p,q} gy[n,k,p,q] x[n, k/m, p*sh - ph + r*dh, q*sw - pw + s*dw]:
// one block per weight element.
__global__ void __launch_bounds__(kThreads)
depthwise_bwd_weight(const float* __restrict__ gy, const float* __restrict__ x,
                     float* __restrict__ gw, FC_DW_PARAMS) {
  __shared__ float red[kThreads / 32];
  const int i = blockIdx.x;  // over K*R*S
  const int s = i % S, r = (i / S) % R, k = i / (R * S);
  float acc = weight_tap_partial(gy, x, N, C, H, W, K, P, Q, k, k / (K / C), r, s, sh, sw,
                                 ph, pw, dh, dw);
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) gw[i] = acc;
}

}  // namespace fc
