// im2col / col2im for the explicit-GEMM convolution (the GEMM itself is gemm.cu).
// Column layout for a chunk of nb images: col[n][c][r*S + s][p*Q + q], i.e. per image and
// group a (Cg*R*S) x (P*Q) row-major matrix, contiguous per (image, group).
#include "common.cuh"

namespace fc {

__global__ void __launch_bounds__(kThreads)
im2col(const float* __restrict__ x, float* __restrict__ col, int nb, int C, int H, int W,
       int P, int Q, int R, int S, int sh, int sw, int ph, int pw, int dh, int dw) {
  const int PQ = P * Q, RS = R * S;
  const int total = nb * C * RS * PQ;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int pq = i % PQ, t = i / PQ, rs = t % RS, nc = t / RS;
    const int p = pq / Q, q = pq - p * Q, r = rs / S, s = rs - r * S;
    const int h = p * sh - ph + r * dh, w = q * sw - pw + s * dw;
    col[i] = ((unsigned)h < (unsigned)H && (unsigned)w < (unsigned)W)
                 ? x[(nc * H + h) * W + w] : 0.f;
  }
}

// gx[n,c,h,w] = sum of the column entries that im2col copied from (h, w): a gather, so
// each input element is written once, without atomics.
__global__ void __launch_bounds__(kThreads)
col2im(const float* __restrict__ col, float* __restrict__ gx, int nb, int C, int H, int W,
       int P, int Q, int R, int S, int sh, int sw, int ph, int pw, int dh, int dw) {
  const int total = nb * C * H * W;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int w = i % W, h = (i / W) % H, nc = i / (H * W);
    const float* cb = col + nc * R * S * P * Q;
    float acc = 0.f;
    for (int r = 0; r < R; ++r) {
      const int th = h + ph - r * dh;
      if (th < 0 || th % sh) continue;
      const int p = th / sh;
      if (p >= P) continue;
      for (int s = 0; s < S; ++s) {
        const int tw = w + pw - s * dw;
        if (tw < 0 || tw % sw) continue;
        const int q = tw / sw;
        if (q < Q) acc += cb[((r * S + s) * P + p) * Q + q];
      }
    }
    gx[i] = acc;
  }
}

}  // namespace fc
