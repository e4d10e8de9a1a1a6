// The register-blocked SGEMM main loop shared by gemm.cu (dense, strided, batched) and
// conv_implicit_gemm.cu (operands gathered from NCHW tensors on the fly).
//
// A block computes a BM x BN tile of C = A(BM x K) * B(K x BN) with 256 threads, each
// owning a TM x TN register tile. K advances BK at a time through double-buffered shared
// memory; the next tile's global loads are issued before the current tile's FMAs so their
// latency hides behind arithmetic. Each thread loads exactly one 4-vector of A (4
// consecutive k) and one of B (4 consecutive n) per tile, which is what lets a Problem
// keep per-thread gather state (see below) in registers across the whole K loop.
//
// A Problem provides:
//   auto prepare_a(int m) const;                  per-thread state for row m of A
//   void load_a(st, int k, int kend, float v[4])  A[m][k..k+3], zero where k+j >= kend
//   auto prepare_b(int n) const;                  state for columns n..n+3 of B
//   void load_b(st, int k, int kend, float v[4])  B[k][n..n+3], zero where k >= kend
//   auto prepare_c(int n) const;                  state for column n of C
//   void store(st, int m, float v) const;         C[m][n] = v (bounds-checked)

namespace fc {

template <int BM, int BN, int BK, int TM, int TN, class P>
__device__ __forceinline__ void gemm_tile(const P& p, int m0, int n0, int k_begin, int k_end) {
  constexpr int NT = (BM / TM) * (BN / TN);
  static_assert(NT == 256, "gemm_tile is tuned for 256 threads");
  static_assert(BM * BK / 4 == NT && BK * BN / 4 == NT, "one 4-vector of A and B per thread");
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are read as float4");
  // +4 keeps rows 16-byte aligned while skewing the transposed A stores across banks.
  __shared__ __align__(16) float As[2][BK][BM + 4];
  __shared__ __align__(16) float Bs[2][BK][BN + 4];

  const int tid = threadIdx.x;
  const int a_m = tid / (BK / 4), a_k = (tid % (BK / 4)) * 4;
  const int b_k = tid / (BN / 4), b_n = (tid % (BN / 4)) * 4;
  const auto ast = p.prepare_a(m0 + a_m);
  const auto bst = p.prepare_b(n0 + b_n);
  // Thread (tx, ty) reads float4 groups strided by BN/(TN/4) and BM/(TM/4), so a warp's
  // shared-memory reads are contiguous (conflict-free) rather than TN floats apart.
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  constexpr int MSTEP = BM / (TM / 4), NSTEP = BN / (TN / 4);

  float acc[TM][TN];
  #pragma unroll
  for (int i = 0; i < TM; ++i)
    #pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  const int nk = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
  float ra[4], rb[4];
  if (nk > 0) {
    p.load_a(ast, k_begin + a_k, k_end, ra);
    p.load_b(bst, k_begin + b_k, k_end, rb);
    #pragma unroll
    for (int j = 0; j < 4; ++j) As[0][a_k + j][a_m] = ra[j];
    *reinterpret_cast<float4*>(&Bs[0][b_k][b_n]) = make_float4(rb[0], rb[1], rb[2], rb[3]);
    __syncthreads();
  }
  for (int t = 0; t < nk; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < nk;
    if (more) {
      const int kt = k_begin + (t + 1) * BK;
      p.load_a(ast, kt + a_k, k_end, ra);
      p.load_b(bst, kt + b_k, k_end, rb);
    }
    #pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float fa[TM], fb[TN];
      #pragma unroll
      for (int u = 0; u < TM / 4; ++u) {
        const float4 v = *reinterpret_cast<const float4*>(&As[cur][kk][u * MSTEP + ty * 4]);
        fa[4 * u] = v.x; fa[4 * u + 1] = v.y; fa[4 * u + 2] = v.z; fa[4 * u + 3] = v.w;
      }
      #pragma unroll
      for (int u = 0; u < TN / 4; ++u) {
        const float4 v = *reinterpret_cast<const float4*>(&Bs[cur][kk][u * NSTEP + tx * 4]);
        fb[4 * u] = v.x; fb[4 * u + 1] = v.y; fb[4 * u + 2] = v.z; fb[4 * u + 3] = v.w;
      }
      #pragma unroll
      for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(fa[i], fb[j], acc[i][j]);
    }
    if (more) {
      // The other buffer was last read in iteration t-1, which every thread has left
      // (barrier below), so it can be refilled while this one is still being read.
      #pragma unroll
      for (int j = 0; j < 4; ++j) As[cur ^ 1][a_k + j][a_m] = ra[j];
      *reinterpret_cast<float4*>(&Bs[cur ^ 1][b_k][b_n]) =
          make_float4(rb[0], rb[1], rb[2], rb[3]);
    }
    __syncthreads();
  }

  #pragma unroll
  for (int v = 0; v < TN / 4; ++v)
    #pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const auto cst = p.prepare_c(n0 + v * NSTEP + tx * 4 + jj);
      #pragma unroll
      for (int u = 0; u < TM / 4; ++u)
        #pragma unroll
        for (int ii = 0; ii < 4; ++ii)
          p.store(cst, m0 + u * MSTEP + ty * 4 + ii, acc[4 * u + ii][4 * v + jj]);
    }
}

}  // namespace fc
