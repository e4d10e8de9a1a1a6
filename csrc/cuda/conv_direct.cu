// Direct convolution: one thread per output element, looping over its receptive field.
// The plain baseline the tiled algorithms are measured against; it serves every stride,
// padding, dilation and group count. Top/left padding is passed; bottom/right is implied
// by the output size. The receptive-field walks are shared with conv_depthwise.cu.
#include "common.cuh"
#include "conv_taps.cuh"

namespace fc {

#define FC_CONV_PARAMS                                                                  \
  int N, int C, int H, int W, int K, int P, int Q, int R, int S, int sh, int sw, int ph, \
      int pw, int dh, int dw, int G

// y[n,k,p,q] = bias[k] + sum_{c,r,s} w[k,c,r,s] x[n, g*Cg + c, p*sh - ph + r*dh, ...]
__global__ void __launch_bounds__(kThreads)
direct_fwd(const float* __restrict__ x, const float* __restrict__ w,
           const float* __restrict__ bias, float* __restrict__ y, FC_CONV_PARAMS) {
  const int total = N * K * P * Q;
  const int Cg = C / G, Kg = K / G;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int q = i % Q, p = (i / Q) % P, k = (i / (P * Q)) % K, n = i / (K * P * Q);
    const int g = k / Kg;
    const int h0 = p * sh - ph, w0 = q * sw - pw;
    const float* xb = x + (n * C + g * Cg) * H * W;
    const float* wb = w + k * Cg * R * S;
    float acc = 0.f;
    for (int c = 0; c < Cg; ++c)
      acc = window_dot(xb + c * H * W, wb + c * R * S, H, W, R, S, h0, w0, dh, dw, acc);
    y[i] = bias ? acc + bias[k] : acc;
  }
}

// gx[n,c,h,w] = sum over (k, r, s) with h + ph - r*dh = p*sh (0 <= p < P) of w * gy.
// Gather form: each input element owns its sum, so no atomics and a deterministic result.
__global__ void __launch_bounds__(kThreads)
direct_bwd_data(const float* __restrict__ gy, const float* __restrict__ w,
                float* __restrict__ gx, FC_CONV_PARAMS) {
  const int total = N * C * H * W;
  const int Cg = C / G, Kg = K / G;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int ww = i % W, h = (i / W) % H, c = (i / (H * W)) % C, n = i / (C * H * W);
    const int g = c / Cg, cl = c - g * Cg;
    float acc = 0.f;
    for (int r = 0; r < R; ++r) {
      const int p = tap_source(h, ph, r * dh, sh, P);
      if (p < 0) continue;
      for (int s = 0; s < S; ++s) {
        const int q = tap_source(ww, pw, s * dw, sw, Q);
        if (q < 0) continue;
        const float* gyb = gy + ((n * K + g * Kg) * P + p) * Q + q;
        const float* wb = w + ((g * Kg * Cg + cl) * R + r) * S + s;
        for (int k = 0; k < Kg; ++k) acc = fmaf(wb[k * Cg * R * S], gyb[k * P * Q], acc);
      }
    }
    gx[i] = acc;
  }
}

// gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
// One block per weight element reduces over N*P*Q.
__global__ void __launch_bounds__(kThreads)
direct_bwd_weight(const float* __restrict__ gy, const float* __restrict__ x,
                  float* __restrict__ gw, FC_CONV_PARAMS) {
  __shared__ float red[kThreads / 32];
  const int Cg = C / G, Kg = K / G;
  const int i = blockIdx.x;  // over K*Cg*R*S
  const int s = i % S, r = (i / S) % R, c = (i / (R * S)) % Cg, k = i / (Cg * R * S);
  const int g = k / Kg;
  float acc = weight_tap_partial(gy, x, N, C, H, W, K, P, Q, k, g * Cg + c, r, s, sh, sw,
                                 ph, pw, dh, dw);
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) gw[i] = acc;
}

}  // namespace fc
