// Implicit-GEMM convolution: the GEMM of im2col without the column buffer. Operand tiles
// are gathered from the NCHW tensors straight into shared memory by gemm_tile (see
// gemm_core.cuh); out-of-image taps are predicated to zero. Each thread keeps the decoded
// coordinates of its four B columns in registers for the whole K loop, so the inner gather
// costs one (c, r, s) or (n, p, q) decode per tile. blockIdx.z is the group (and, for the
// weight gradient, the K split). Padding: top/left is passed, bottom/right is implied by
// P and Q, which is how asymmetric 'same' padding is served.
#include "common.cuh"
#include "gemm_core.cuh"

namespace fc {

struct ConvGeom {
  int N, C, H, W, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, G;
  __device__ __forceinline__ int Cg() const { return C / G; }
  __device__ __forceinline__ int Kg() const { return K / G; }
};

// Sentinel that makes every bounds test of a padded column fail.
constexpr int kOff = -(1 << 28);

// ------------------------------------------------------------------ forward
// y[n, g*Kg + m, p, q] = sum_{c,r,s} w[g*Kg + m, c, r, s] * x[n, g*Cg + c, h, w] (+ bias)
// GEMM: M = Kg, N = N*P*Q, K = Cg*R*S.
struct FwdProblem {
  ConvGeom d; int g;
  const float* __restrict__ x; const float* __restrict__ w; const float* __restrict__ bias;
  float* y;
  int M, NC, KD;

  struct RowA { const float* row; bool ok; };
  struct ColB { int base[4]; int h0[4]; int w0[4]; };
  struct ColC { int off; bool ok; };

  __device__ __forceinline__ RowA prepare_a(int m) const {
    return RowA{w + (i64)(g * d.Kg() + m) * KD, m < M};
  }
  __device__ __forceinline__ void load_a(const RowA& st, int k, int kend, float (&v)[4]) const {
    const float* q = st.row + k;
    if (st.ok && k + 3 < kend && aligned16(q)) {
      const float4 t = *reinterpret_cast<const float4*>(q);
      v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
      return;
    }
    #pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = (st.ok && k + j < kend) ? q[j] : 0.f;
  }
  __device__ __forceinline__ ColB prepare_b(int n) const {
    ColB st;
    const int PQ = d.P * d.Q;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n + j;
      if (col < NC) {
        const int ni = col / PQ, pq = col - ni * PQ, p = pq / d.Q, q = pq - p * d.Q;
        st.base[j] = (ni * d.C + g * d.Cg()) * d.H * d.W;
        st.h0[j] = p * d.sh - d.ph;
        st.w0[j] = q * d.sw - d.pw;
      } else {
        st.base[j] = 0; st.h0[j] = kOff; st.w0[j] = kOff;
      }
    }
    return st;
  }
  __device__ __forceinline__ void load_b(const ColB& st, int k, int kend, float (&v)[4]) const {
    const int RS = d.R * d.S;
    const int c = k / RS, rs = k - c * RS, r = rs / d.S, s = rs - r * d.S;
    const int hoff = r * d.dh, woff = s * d.dw, cb = c * d.H * d.W;
    const bool kin = k < kend;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = st.h0[j] + hoff, ww = st.w0[j] + woff;
      v[j] = (kin && (unsigned)h < (unsigned)d.H && (unsigned)ww < (unsigned)d.W)
                 ? x[st.base[j] + cb + h * d.W + ww] : 0.f;
    }
  }
  __device__ __forceinline__ ColC prepare_c(int n) const {
    const int PQ = d.P * d.Q;
    const int ni = n / PQ, pq = n - ni * PQ;
    return ColC{(ni * d.K + g * d.Kg()) * PQ + pq, n < NC};
  }
  __device__ __forceinline__ void store(const ColC& st, int m, float v) const {
    if (!st.ok || m >= M) return;
    const int k = g * d.Kg() + m;
    y[st.off + m * d.P * d.Q] = bias ? v + bias[k] : v;
  }
};

// ------------------------------------------------------------------ backward data
// gx[n, g*Cg + m, h, w] = sum_{k,r,s} w[g*Kg + k, m, r, s] * gy[n, g*Kg + k, p, q]
// where h + ph = p*sh + r*dh. GEMM: M = Cg, N = N*H*W, K = Kg*R*S. Taps whose p is not an
// integer (stride > 1) are zeros in B: correct, at the cost of wasted FMAs.
struct BwdDataProblem {
  ConvGeom d; int g;
  const float* __restrict__ gy; const float* __restrict__ w; float* gx;
  int M, NC, KD;

  struct RowA { const float* base; bool ok; };
  struct ColB { int base[4]; int hh[4]; int ww[4]; };
  struct ColC { int off; bool ok; };

  __device__ __forceinline__ RowA prepare_a(int m) const {
    return RowA{w + (i64)g * d.Kg() * d.Cg() * d.R * d.S + (i64)m * d.R * d.S, m < M};
  }
  __device__ __forceinline__ void load_a(const RowA& st, int k, int kend, float (&v)[4]) const {
    const int RS = d.R * d.S, CRS = d.Cg() * RS;
    int kk = k / RS, rs = k - kk * RS;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[j] = (st.ok && k + j < kend) ? st.base[kk * CRS + rs] : 0.f;
      if (++rs == RS) { rs = 0; ++kk; }
    }
  }
  __device__ __forceinline__ ColB prepare_b(int n) const {
    ColB st;
    const int HW = d.H * d.W;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n + j;
      if (col < NC) {
        const int ni = col / HW, hw = col - ni * HW, h = hw / d.W, ww = hw - h * d.W;
        st.base[j] = (ni * d.K + g * d.Kg()) * d.P * d.Q;
        st.hh[j] = h + d.ph;
        st.ww[j] = ww + d.pw;
      } else {
        st.base[j] = 0; st.hh[j] = kOff; st.ww[j] = kOff;
      }
    }
    return st;
  }
  __device__ __forceinline__ void load_b(const ColB& st, int k, int kend, float (&v)[4]) const {
    const int RS = d.R * d.S;
    const int kk = k / RS, rs = k - kk * RS, r = rs / d.S, s = rs - r * d.S;
    const int kb = kk * d.P * d.Q, roff = r * d.dh, soff = s * d.dw;
    const bool kin = k < kend;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int th = st.hh[j] - roff, tw = st.ww[j] - soff;
      // th, tw may be negative: test before dividing so truncation toward zero is harmless.
      bool ok = kin && th >= 0 && tw >= 0;
      const int p = ok ? th / d.sh : 0, q = ok ? tw / d.sw : 0;
      ok = ok && p * d.sh == th && q * d.sw == tw && p < d.P && q < d.Q;
      v[j] = ok ? gy[st.base[j] + kb + p * d.Q + q] : 0.f;
    }
  }
  __device__ __forceinline__ ColC prepare_c(int n) const {
    const int HW = d.H * d.W;
    const int ni = n / HW, hw = n - ni * HW;
    return ColC{(ni * d.C + g * d.Cg()) * HW + hw, n < NC};
  }
  __device__ __forceinline__ void store(const ColC& st, int m, float v) const {
    if (st.ok && m < M) gx[st.off + m * d.H * d.W] = v;
  }
};

// ------------------------------------------------------------------ backward weight
// gw[g*Kg + m, c, r, s] = sum_{n,p,q} gy[n, g*Kg + m, p, q] * x[n, g*Cg + c, h, w]
// GEMM: M = Kg, N = Cg*R*S, K = N*P*Q (long), split over blockIdx.z with atomic adds into
// a zeroed gw when splits > 1.
struct BwdWeightProblem {
  ConvGeom d; int g; int splits;
  const float* __restrict__ gy; const float* __restrict__ x; float* gw;
  int M, NC, KD;

  struct RowA { const float* base; bool ok; };
  struct ColB { int cb[4]; int roff[4]; int soff[4]; };

  __device__ __forceinline__ RowA prepare_a(int m) const {
    return RowA{gy + (i64)(g * d.Kg() + m) * d.P * d.Q, m < M};
  }
  __device__ __forceinline__ void load_a(const RowA& st, int k, int kend, float (&v)[4]) const {
    const int PQ = d.P * d.Q, step = d.K * PQ;
    int ni = k / PQ, pq = k - ni * PQ;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[j] = (st.ok && k + j < kend) ? st.base[ni * step + pq] : 0.f;
      if (++pq == PQ) { pq = 0; ++ni; }
    }
  }
  __device__ __forceinline__ ColB prepare_b(int n) const {
    ColB st;
    const int RS = d.R * d.S;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n + j;
      if (col < NC) {
        const int c = col / RS, rs = col - c * RS, r = rs / d.S, s = rs - r * d.S;
        st.cb[j] = (g * d.Cg() + c) * d.H * d.W;
        st.roff[j] = r * d.dh - d.ph;
        st.soff[j] = s * d.dw - d.pw;
      } else {
        st.cb[j] = 0; st.roff[j] = kOff; st.soff[j] = kOff;
      }
    }
    return st;
  }
  __device__ __forceinline__ void load_b(const ColB& st, int k, int kend, float (&v)[4]) const {
    const int PQ = d.P * d.Q;
    const int ni = k / PQ, pq = k - ni * PQ, p = pq / d.Q, q = pq - p * d.Q;
    const int hb = p * d.sh, wb = q * d.sw, nb = ni * d.C * d.H * d.W;
    const bool kin = k < kend;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = hb + st.roff[j], ww = wb + st.soff[j];
      v[j] = (kin && (unsigned)h < (unsigned)d.H && (unsigned)ww < (unsigned)d.W)
                 ? x[nb + st.cb[j] + h * d.W + ww] : 0.f;
    }
  }
  __device__ __forceinline__ int prepare_c(int n) const { return n; }
  __device__ __forceinline__ void store(int n, int m, float v) const {
    if (n >= NC || m >= M) return;
    float* dst = gw + (g * d.Kg() + m) * NC + n;
    if (splits > 1) atomicAdd(dst, v); else *dst = v;
  }
};

#define FC_CONV_PARAMS                                                                  \
  int N, int C, int H, int W, int K, int P, int Q, int R, int S, int sh, int sw, int ph, \
      int pw, int dh, int dw, int G
#define FC_CONV_GEOM ConvGeom{N, C, H, W, K, P, Q, R, S, sh, sw, ph, pw, dh, dw, G}

template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(256)
igemm_fwd(const float* __restrict__ x, const float* __restrict__ w,
          const float* __restrict__ bias, float* y, FC_CONV_PARAMS) {
  const ConvGeom d = FC_CONV_GEOM;
  const int g = blockIdx.z;
  const FwdProblem p{d, g, x, w, bias, y, d.Kg(), N * P * Q, d.Cg() * R * S};
  gemm_tile<BM, BN, BK, TM, TN>(p, blockIdx.y * BM, blockIdx.x * BN, 0, p.KD);
}

template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(256)
igemm_bwd_data(const float* __restrict__ gy, const float* __restrict__ w, float* gx,
               FC_CONV_PARAMS) {
  const ConvGeom d = FC_CONV_GEOM;
  const int g = blockIdx.z;
  const BwdDataProblem p{d, g, gy, w, gx, d.Cg(), N * H * W, d.Kg() * R * S};
  gemm_tile<BM, BN, BK, TM, TN>(p, blockIdx.y * BM, blockIdx.x * BN, 0, p.KD);
}

template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(256)
igemm_bwd_weight(const float* __restrict__ gy, const float* __restrict__ x, float* gw,
                 FC_CONV_PARAMS, int splits) {
  const ConvGeom d = FC_CONV_GEOM;
  const int g = blockIdx.z / splits, split = blockIdx.z - g * splits;
  const BwdWeightProblem p{d, g, splits, gy, x, gw, d.Kg(), d.Cg() * R * S, N * P * Q};
  const int per = ((p.KD + splits - 1) / splits + BK - 1) / BK * BK;
  const int kb = split * per;
  gemm_tile<BM, BN, BK, TM, TN>(p, blockIdx.y * BM, blockIdx.x * BN, kb, min(p.KD, kb + per));
}

}  // namespace fc
