// Winograd F(m x m, 3 x 3) for m = 2 and m = 4 (alpha = m + 2), stride 1, dilation 1,
// groups 1. Three kernels around a batched GEMM in the transform domain (gemm.cu):
//   U[xi][k][c] = (G g G^T)[xi]              filter transform
//   V[xi][c][t] = (B^T d B)[xi]              input transform, t = tile over (n, th, tw)
//   M[xi]       = U[xi] (K x C) * V[xi] (C x T)   alpha^2 GEMMs
//   y tile      = A^T M A (+ bias)           output transform
// The backward-data pass is the same pipeline on grad_out with the filter flipped and its
// channel axes swapped (flip = 1) and padding R-1-ph (possibly negative: an offset only).
// Matrices are Lavin & Gray's; the small loops unroll fully so zero taps fold away.
#include "common.cuh"

namespace fc {

template <int M> struct Wino;

template <> struct Wino<2> {
  static constexpr int A = 4;
  __device__ static __forceinline__ float bt(int i, int j) {
    const float t[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
    return t[i][j];
  }
  __device__ static __forceinline__ float g(int i, int j) {
    const float t[4][3] = {{1, 0, 0}, {.5f, .5f, .5f}, {.5f, -.5f, .5f}, {0, 0, 1}};
    return t[i][j];
  }
  __device__ static __forceinline__ float at(int i, int j) {
    const float t[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
    return t[i][j];
  }
};

template <> struct Wino<4> {
  static constexpr int A = 6;
  __device__ static __forceinline__ float bt(int i, int j) {
    const float t[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                           {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
    return t[i][j];
  }
  __device__ static __forceinline__ float g(int i, int j) {
    const float t[6][3] = {{1.f / 4, 0, 0},
                           {-1.f / 6, -1.f / 6, -1.f / 6},
                           {-1.f / 6, 1.f / 6, -1.f / 6},
                           {1.f / 24, 1.f / 12, 1.f / 6},
                           {1.f / 24, -1.f / 12, 1.f / 6},
                           {0, 0, 1}};
    return t[i][j];
  }
  __device__ static __forceinline__ float at(int i, int j) {
    const float t[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0},
                           {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
    return t[i][j];
  }
};

// U[(xi * K + k) * C + c]. flip = 0: g = w[k][c] (w is K x C x 3 x 3). flip = 1: the
// transposed, rotated filter of the backward-data pass, g[r][s] = w[c][k][2-r][2-s] with
// w of shape C x K x 3 x 3 (the forward's K and C swapped).
template <int M>
__global__ void __launch_bounds__(kThreads)
wino_filter(const float* __restrict__ w, float* __restrict__ U, int K, int C, int flip) {
  constexpr int A = Wino<M>::A;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= K * C) return;
  const int k = i / C, c = i - k * C;
  float gk[3][3];
  #pragma unroll
  for (int r = 0; r < 3; ++r)
    #pragma unroll
    for (int s = 0; s < 3; ++s)
      gk[r][s] = flip ? w[(c * K + k) * 9 + (2 - r) * 3 + (2 - s)] : w[(k * C + c) * 9 + r * 3 + s];
  float t[A][3];
  #pragma unroll
  for (int a = 0; a < A; ++a)
    #pragma unroll
    for (int s = 0; s < 3; ++s)
      t[a][s] = Wino<M>::g(a, 0) * gk[0][s] + Wino<M>::g(a, 1) * gk[1][s] + Wino<M>::g(a, 2) * gk[2][s];
  #pragma unroll
  for (int a = 0; a < A; ++a)
    #pragma unroll
    for (int b = 0; b < A; ++b)
      U[((a * A + b) * K + k) * C + c] =
          t[a][0] * Wino<M>::g(b, 0) + t[a][1] * Wino<M>::g(b, 1) + t[a][2] * Wino<M>::g(b, 2);
}

// V[(xi * C + c) * T + t] for the tiles of nb images; tile (th, tw) covers output rows
// th*M .. th*M+M-1 and reads input rows th*M - ph .. + alpha - 1 (zero outside).
template <int M>
__global__ void __launch_bounds__(kThreads)
wino_input(const float* __restrict__ x, float* __restrict__ V, int nb, int C, int H, int W,
           int ph, int pw, int TH, int TW) {
  constexpr int A = Wino<M>::A;
  const int T = nb * TH * TW;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < C * T; i += gridDim.x * blockDim.x) {
    const int t = i % T, c = i / T;
    const int n = t / (TH * TW), tt = t - n * TH * TW, th = tt / TW, tw = tt - th * TW;
    const int h0 = th * M - ph, w0 = tw * M - pw;
    const float* xb = x + (n * C + c) * H * W;
    float d[A][A];
    #pragma unroll
    for (int a = 0; a < A; ++a)
      #pragma unroll
      for (int b = 0; b < A; ++b) {
        const int h = h0 + a, w = w0 + b;
        d[a][b] = ((unsigned)h < (unsigned)H && (unsigned)w < (unsigned)W) ? xb[h * W + w] : 0.f;
      }
    float u[A][A];
    #pragma unroll
    for (int a = 0; a < A; ++a)
      #pragma unroll
      for (int b = 0; b < A; ++b) {
        float s = 0.f;
        #pragma unroll
        for (int e = 0; e < A; ++e) s += Wino<M>::bt(a, e) * d[e][b];
        u[a][b] = s;
      }
    #pragma unroll
    for (int a = 0; a < A; ++a)
      #pragma unroll
      for (int b = 0; b < A; ++b) {
        float s = 0.f;
        #pragma unroll
        for (int e = 0; e < A; ++e) s += u[a][e] * Wino<M>::bt(b, e);
        V[((a * A + b) * C + c) * T + t] = s;
      }
  }
}

// y[n, k, th*M + i, tw*M + j] = (A^T Mx A)[i][j] + bias[k], clipped to P x Q.
template <int M>
__global__ void __launch_bounds__(kThreads)
wino_output(const float* __restrict__ Mx, const float* __restrict__ bias, float* __restrict__ y,
            int nb, int K, int P, int Q, int TH, int TW) {
  constexpr int A = Wino<M>::A;
  const int T = nb * TH * TW;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < K * T; i += gridDim.x * blockDim.x) {
    const int t = i % T, k = i / T;
    const int n = t / (TH * TW), tt = t - n * TH * TW, th = tt / TW, tw = tt - th * TW;
    float m[A][A];
    #pragma unroll
    for (int a = 0; a < A; ++a)
      #pragma unroll
      for (int b = 0; b < A; ++b) m[a][b] = Mx[((a * A + b) * K + k) * T + t];
    float u[M][A];
    #pragma unroll
    for (int a = 0; a < M; ++a)
      #pragma unroll
      for (int b = 0; b < A; ++b) {
        float s = 0.f;
        #pragma unroll
        for (int e = 0; e < A; ++e) s += Wino<M>::at(a, e) * m[e][b];
        u[a][b] = s;
      }
    const float bk = bias ? bias[k] : 0.f;
    float* yb = y + (n * K + k) * P * Q;
    #pragma unroll
    for (int a = 0; a < M; ++a)
      #pragma unroll
      for (int b = 0; b < M; ++b) {
        float s = 0.f;
        #pragma unroll
        for (int e = 0; e < A; ++e) s += u[a][e] * Wino<M>::at(b, e);
        const int p = th * M + a, q = tw * M + b;
        if (p < P && q < Q) yb[p * Q + q] = s + bk;
      }
  }
}

}  // namespace fc
