// Direct convolution: one thread per output element, looping over its receptive field.
// The plain baseline the tiled algorithms are measured against; it serves every stride,
// padding, dilation and group count. Top/left padding is passed; bottom/right is implied
// by the output size.
#include "common.cuh"

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
    for (int c = 0; c < Cg; ++c) {
      for (int r = 0; r < R; ++r) {
        const int h = h0 + r * dh;
        if ((unsigned)h >= (unsigned)H) continue;
        for (int s = 0; s < S; ++s) {
          const int ww = w0 + s * dw;
          if ((unsigned)ww < (unsigned)W) acc = fmaf(wb[(c * R + r) * S + s], xb[(c * H + h) * W + ww], acc);
        }
      }
    }
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
      const int th = h + ph - r * dh;
      if (th < 0 || th % sh) continue;
      const int p = th / sh;
      if (p >= P) continue;
      for (int s = 0; s < S; ++s) {
        const int tw = ww + pw - s * dw;
        if (tw < 0 || tw % sw) continue;
        const int q = tw / sw;
        if (q >= Q) continue;
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
  const int PQ = P * Q, total = N * PQ;
  float acc = 0.f;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int n = j / PQ, pq = j - n * PQ, p = pq / Q, q = pq - p * Q;
    const int h = p * sh - ph + r * dh, ww = q * sw - pw + s * dw;
    if ((unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W)
      acc = fmaf(gy[(n * K + k) * PQ + pq], x[((n * C + g * Cg + c) * H + h) * W + ww], acc);
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) gw[i] = acc;
}

}  // namespace fc
