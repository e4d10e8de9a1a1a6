// Dense SGEMM on strided batches: for every z in the grid and every split s of K,
//   C[z] (M x N)  (+)=  alpha * sum_{l < L} op(A[z, l]) (M x Kd) * op(B[z, l]) (Kd x N) + bias
// op() is a transpose when TA/TB is set (A stored Kd x M, B stored N x Kd). The L axis
// concatenates K ranges of separate matrices (the per-image terms of a weight gradient)
// so they reduce in registers instead of through C. With split > 1 each split adds its
// partial product atomically into C, which the caller has zeroed; this restores
// parallelism when M x N is small and K is long. Used by im2col and Winograd; no cuBLAS.
#include "common.cuh"
#include "gemm_core.cuh"

namespace fc {

struct GemmArgs {
  const float* A; const float* B; float* C; const float* bias;
  int M, N, Kd, L;
  int lda, ldb, ldc;
  i64 sAl, sBl;            // strides of one l step
  i64 sAo, sAi, sBo, sBi, sCo, sCi;  // z = zo * Z2 + zi
  int Z2, splits;
  float alpha, beta;
};

template <bool TA, bool TB>
struct DenseProblem {
  GemmArgs a;
  const float* A; const float* B; float* C;

  struct RowA { const float* base; bool ok; };
  struct ColB { int n; };

  // Virtual k runs over L * Kd; a 4-vector stays vectorisable only inside one matrix.
  __device__ __forceinline__ RowA prepare_a(int m) const {
    return RowA{A + (TA ? (i64)m : (i64)m * a.lda), m < a.M};
  }
  __device__ __forceinline__ void load_a(const RowA& st, int k, int kend, float (&v)[4]) const {
    const int l = k / a.Kd, kk = k - l * a.Kd;
    if (!TA && st.ok && k + 3 < kend && kk + 3 < a.Kd) {
      const float* q = st.base + l * a.sAl + kk;
      if (aligned16(q)) {
        const float4 t = *reinterpret_cast<const float4*>(q);
        v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
        return;
      }
    }
    int ll = l, kj = kk;
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[j] = (st.ok && k + j < kend)
                 ? st.base[ll * a.sAl + (TA ? (i64)kj * a.lda : (i64)kj)] : 0.f;
      if (++kj == a.Kd) { kj = 0; ++ll; }
    }
  }
  __device__ __forceinline__ ColB prepare_b(int n) const { return ColB{n}; }
  __device__ __forceinline__ void load_b(const ColB& st, int k, int kend, float (&v)[4]) const {
    const int l = k / a.Kd, kk = k - l * a.Kd;
    const bool kin = k < kend;
    if (TB) {
      const float* q = B + l * a.sBl + kk;
      #pragma unroll
      for (int j = 0; j < 4; ++j)
        v[j] = (kin && st.n + j < a.N) ? q[(i64)(st.n + j) * a.ldb] : 0.f;
      return;
    }
    const float* q = B + l * a.sBl + (i64)kk * a.ldb + st.n;
    if (kin && st.n + 3 < a.N && aligned16(q)) {
      const float4 t = *reinterpret_cast<const float4*>(q);
      v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
      return;
    }
    #pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = (kin && st.n + j < a.N) ? q[j] : 0.f;
  }
  __device__ __forceinline__ int prepare_c(int n) const { return n; }
  __device__ __forceinline__ void store(int n, int m, float v) const {
    if (m >= a.M || n >= a.N) return;
    float* c = C + (i64)m * a.ldc + n;
    const bool first = blockIdx.z % a.splits == 0;
    v *= a.alpha;
    if (a.bias && first) v += a.bias[m];
    if (a.splits > 1) {
      atomicAdd(c, v);
    } else {
      if (a.beta != 0.f) v += a.beta * *c;
      *c = v;
    }
  }
};

// Scalars are passed one by one rather than as a struct: CuPy marshals each Python-side
// numpy scalar by its own size, so there is no host/device struct layout to keep in sync.
template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
__global__ void __launch_bounds__(256)
gemm(const float* __restrict__ A, const float* __restrict__ B, float* C,
     const float* __restrict__ bias, int M, int N, int Kd, int L, int lda, int ldb, int ldc,
     i64 sAl, i64 sBl, i64 sAo, i64 sAi, i64 sBo, i64 sBi, i64 sCo, i64 sCi, int Z2,
     int sbias, int splits, float alpha, float beta) {
  const int split = blockIdx.z % splits;
  const int z = blockIdx.z / splits;
  const int zo = z / Z2, zi = z - zo * Z2;
  // bias[m] of batch entry zi starts at zi * sbias (a group's first output channel).
  const GemmArgs args{A, B, C, bias ? bias + zi * sbias : bias, M, N, Kd, L, lda, ldb, ldc,
                      sAl, sBl, sAo, sAi, sBo, sBi, sCo, sCi, Z2, splits, alpha, beta};
  DenseProblem<TA, TB> p{args, A + zo * sAo + zi * sAi, B + zo * sBo + zi * sBi,
                         C + zo * sCo + zi * sCi};
  const int ktot = L * Kd;
  // Split boundaries fall on multiples of BK so that only the last split has a ragged tile.
  const int per = ((ktot + splits - 1) / splits + BK - 1) / BK * BK;
  const int kb = split * per;
  const int ke = min(ktot, kb + per);
  gemm_tile<BM, BN, BK, TM, TN>(p, blockIdx.y * BM, blockIdx.x * BN, kb, ke);
}

}  // namespace fc
