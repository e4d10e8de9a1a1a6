// Winograd convolution F(m x m, 3 x 3), m in {2, 4} (Lavin & Gray 2015), forward and
// backward-data, for 3x3 / stride 1 / dilation 1 / groups 1.
//
//   y = A^T [ (G g G^T) . (B^T d B) ] A      per m x m output tile, per channel pair
//
// Layout of the work, per chunk of Tc output tiles (the tile index runs over n, tile row,
// tile column, so small images still fill the vectors):
//   1. input transform: V[xi][c][t] = (B^T d_{c,t} B)[xi], vectorised over t (consecutive
//      tiles in a tile row). The tile's input columns m*t + s are gathered once per row
//      into m "phase" rows (ph_p[u] = x[m*u + p]), so every B^T d B operand is a contiguous
//      vector load and padding / partial tiles are plain zeros in that row buffer.
//   2. (m+2)^2 independent GEMMs M[xi] = U[xi] (K x C) * V[xi] (C x Tc), done by a
//      register-blocked micro-kernel (MR filters x NR vectors of tiles). U is packed once
//      per call as [xi][K/MR][C][MR] so the broadcasts are contiguous.
//   3. output transform y = A^T M A (+ bias), vectorised over t, scattered to NCHW with
//      bottom / right partial tiles clipped.
// Chunks are independent (each writes its own tiles of y), so threads take whole chunks;
// the per-thread buffers are bounded by the chunk size, not by the problem.
//
// Backward-data of a stride-1 correlation is a correlation of grad_out with the kernel
// flipped in space and transposed K <-> C, padded by (2 - top, 2 - left): the same code.
#include "cpu/kernel_common.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {

#if defined(FC_ISA_avx512)
constexpr int kVecBytes = 64;
#elif defined(FC_ISA_avx2)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;  // SSE2 is the x86-64 baseline; elsewhere GCC emulates it
#endif

template <class T>
struct Simd {
  typedef T V __attribute__((vector_size(kVecBytes)));
  static constexpr int L = kVecBytes / static_cast<int>(sizeof(T));
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static V splat(T s) { return V{} + s; }
};

// Micro-kernel register block: MR filters x NR vectors of tiles. 6 x 2 keeps 12
// accumulators + 2 operands + 1 broadcast inside 16 registers (AVX2 / SSE) and leaves
// room on AVX-512.
constexpr int MR = 6;
constexpr int NR = 2;

// ---- 1-D transforms (applied to rows, then to columns) ----------------------------

template <int m, class V>
struct Tr;

template <class V>
struct Tr<2, V> {
  static void in(const V* d, V* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  }
  static void out(const V* a, V* y) {
    y[0] = a[0] + a[1] + a[2];
    y[1] = a[1] - a[2] - a[3];
  }
};

template <class V>
struct Tr<4, V> {
  static void in(const V* d, V* o) {
    // Points 0, +-1, +-2, inf. Shared partial sums keep it at ~20 adds / 6 values.
    const V t0 = d[4] - 4 * d[2];
    const V t1 = d[3] - 4 * d[1];
    const V t2 = d[4] - d[2];
    const V t3 = 2 * (d[3] - d[1]);
    o[0] = 4 * d[0] - 5 * d[2] + d[4];
    o[1] = t0 + t1;
    o[2] = t0 - t1;
    o[3] = t2 + t3;
    o[4] = t2 - t3;
    o[5] = 4 * d[1] - 5 * d[3] + d[5];
  }
  static void out(const V* a, V* y) {
    const V s12 = a[1] + a[2], d12 = a[1] - a[2];
    const V s34 = a[3] + a[4], d34 = a[3] - a[4];
    y[0] = a[0] + s12 + s34;
    y[1] = d12 + 2 * d34;
    y[2] = s12 + 4 * s34;
    y[3] = d12 + 8 * d34 + a[5];
  }
};

// G (alpha x 3) of F(m, 3), in double: the filter transform is done once per call.
template <int m>
const double (*g_matrix())[3];
template <>
const double (*g_matrix<2>())[3] {
  static const double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
  return G;
}
template <>
const double (*g_matrix<4>())[3] {
  static const double G[6][3] = {{1. / 4, 0, 0},           {-1. / 6, -1. / 6, -1. / 6},
                                 {-1. / 6, 1. / 6, -1. / 6}, {1. / 24, 1. / 12, 1. / 6},
                                 {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  return G;
}

// Packs U[xi][kb][c][MR] = (G g_{k,c} G^T)[xi] for k = kb*MR + i (zero past K).
// g(k, c) returns a pointer to the 3x3 filter (row-major) or fills `tmp`.
template <class T, int m, class GetFilter>
void transform_filters(int64_t K, int64_t C, GetFilter g, T* U) {
  constexpr int a = m + 2;
  const double(*G)[3] = g_matrix<m>();
  const int64_t KB = (K + MR - 1) / MR;
  const int64_t per_xi = KB * C * MR;
#pragma omp parallel for schedule(static) num_threads(threads_for(K, C * 200))
  for (int64_t k = 0; k < KB * MR; ++k) {
    const int64_t kb = k / MR, i = k % MR;
    for (int64_t c = 0; c < C; ++c) {
      double u[a][a];
      if (k < K) {
        double f[3][3];
        g(k, c, f);
        double t[a][3];  // G g
        for (int r = 0; r < a; ++r)
          for (int s = 0; s < 3; ++s)
            t[r][s] = G[r][0] * f[0][s] + G[r][1] * f[1][s] + G[r][2] * f[2][s];
        for (int r = 0; r < a; ++r)
          for (int q = 0; q < a; ++q)
            u[r][q] = t[r][0] * G[q][0] + t[r][1] * G[q][1] + t[r][2] * G[q][2];
      } else {
        for (int r = 0; r < a; ++r)
          for (int q = 0; q < a; ++q) u[r][q] = 0;
      }
      for (int xi = 0; xi < a * a; ++xi)
        U[xi * per_xi + (kb * C + c) * MR + i] = static_cast<T>(u[xi / a][xi % a]);
    }
  }
}

// M[0..kv)[0..NR*L) = Upanel (C x MR, packed) ^T * V (C rows of ld), kv <= MR.
template <class T>
inline void micro_gemm(int64_t C, const T* __restrict Up, const T* __restrict Vp, int64_t ldv,
                       T* __restrict Mp, int64_t ldm, int kv) {
  using S = Simd<T>;
  using V = typename S::V;
  V acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = V{};
  for (int64_t c = 0; c < C; ++c) {
    V b[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) b[j] = S::load(Vp + c * ldv + j * S::L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V u = S::splat(Up[c * MR + i]);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] += u * b[j];
    }
  }
  if (kv == MR) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) S::store(Mp + i * ldm + j * S::L, acc[i][j]);
  } else {
    for (int i = 0; i < kv; ++i)
      for (int j = 0; j < NR; ++j) S::store(Mp + i * ldm + j * S::L, acc[i][j]);
  }
}

// One (n, tile row) run of consecutive tiles inside a chunk.
struct Segment {
  int64_t n, th, tw0, cnt, off;  // off: column of the first tile in the chunk buffers
};

template <class T, int m>
void winograd_core(const ConvShape& s, const T* x, const T* U, const T* bias, T* y) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  constexpr int a = m + 2, A2 = a * a;
  constexpr int TB = NR * L;  // tiles per micro-kernel call
  const int64_t C = s.C, K = s.K, H = s.H, W = s.W, P = s.P, Q = s.Q;
  const int64_t TH = (P + m - 1) / m, TW = (Q + m - 1) / m;
  const int64_t tiles_img = TH * TW, NT = s.N * tiles_img;
  const int64_t KB = (K + MR - 1) / MR;

  // Chunk size: the transform-domain buffers V (A2 x C x Tc) and M (A2 x K x Tc) should
  // stay around L2 size; never fewer chunks than threads when there is enough work.
  const int nth_max = num_threads();
  const int64_t budget = int64_t(768) << 10;
  int64_t Tc = budget / (int64_t(A2) * (C + K) * int64_t(sizeof(T)));
  Tc = std::max<int64_t>(TB, Tc / TB * TB);
  Tc = std::min<int64_t>(Tc, 32 * TB);
  const int64_t per_thread = ((NT + nth_max - 1) / nth_max + TB - 1) / TB * TB;
  Tc = std::max<int64_t>(TB, std::min(Tc, per_thread));
  const int64_t nchunks = (NT + Tc - 1) / Tc;
  const int64_t ld = Tc + L;  // slack: a segment's last vector may spill past its tiles
  const int64_t TWV = (std::min(TW, Tc) + L - 1) / L * L;  // longest segment, rounded
  const int64_t phw = TWV + 2;  // + (a - 1) / m extra columns read by the last vector

  const int64_t flops_chunk = int64_t(2) * A2 * K * C * Tc;
#pragma omp parallel num_threads(threads_for(nchunks, flops_chunk))
  {
    std::vector<T> Vbuf(size_t(A2) * C * ld, T(0));
    std::vector<T> Mbuf(size_t(A2) * K * ld, T(0));
    std::vector<T> phbuf(size_t(a) * m * phw, T(0));
    std::vector<Segment> segs;
    alignas(64) T ybuf[m][m][L];

#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const int64_t t0 = ch * Tc, t1 = std::min(NT, t0 + Tc);
      segs.clear();
      for (int64_t t = t0; t < t1;) {
        const int64_t n = t / tiles_img, rem = t % tiles_img;
        const int64_t th = rem / TW, tw0 = rem % TW;
        const int64_t cnt = std::min(TW - tw0, t1 - t);
        segs.push_back({n, th, tw0, cnt, t - t0});
        t += cnt;
      }

      // 1. input transform
      for (const Segment& g : segs) {
        const int64_t nv = (g.cnt + L - 1) / L * L;
        const int64_t ncol = nv + (a - 1) / m;  // phase-row entries the vectors read
        for (int64_t c = 0; c < C; ++c) {
          const T* xc = x + (g.n * C + c) * H * W;
          for (int i = 0; i < a; ++i) {
            const int64_t row = g.th * m - s.ph + i;
            T* pr = phbuf.data() + size_t(i) * m * phw;
            if (row < 0 || row >= H) {
              for (int p = 0; p < m; ++p) std::fill(pr + p * phw, pr + p * phw + ncol, T(0));
              continue;
            }
            const T* xr = xc + row * W;
            const int64_t col0 = g.tw0 * m - s.pw;  // input column of phase 0, entry 0
            // Entries u with 0 <= col0 + m*u + p < W for every p are copied without checks.
            int64_t u_lo = col0 >= 0 ? 0 : (-col0 + m - 1) / m;
            int64_t u_hi = col0 + m - 1 < W ? (W - m - col0) / m + 1 : 0;
            u_lo = std::min(u_lo, ncol);
            u_hi = std::max(u_lo, std::min(u_hi, ncol));
            for (int64_t u = 0; u < ncol; ++u) {
              if (u == u_lo) {
                const T* src = xr + col0 + m * u_lo;
                for (int64_t v = 0; v < u_hi - u_lo; ++v)
                  for (int p = 0; p < m; ++p) pr[p * phw + u_lo + v] = src[m * v + p];
                u = u_hi;
                if (u >= ncol) break;
              }
              for (int p = 0; p < m; ++p) {
                const int64_t col = col0 + m * u + p;
                pr[p * phw + u] = (col >= 0 && col < W) ? xr[col] : T(0);
              }
            }
          }
          T* vdst = Vbuf.data() + c * ld + g.off;
          for (int64_t vb = 0; vb < nv; vb += L) {
            V d[a][a], e[a][a];
            for (int i = 0; i < a; ++i)
              for (int q = 0; q < a; ++q)
                d[i][q] = S::load(phbuf.data() + (size_t(i) * m + q % m) * phw + vb + q / m);
            // rows: e[:, q] = B^T d[:, q]
            for (int q = 0; q < a; ++q) {
              V col[a], o[a];
              for (int i = 0; i < a; ++i) col[i] = d[i][q];
              Tr<m, V>::in(col, o);
              for (int i = 0; i < a; ++i) e[i][q] = o[i];
            }
            for (int i = 0; i < a; ++i) {
              V o[a];
              Tr<m, V>::in(e[i], o);
              for (int q = 0; q < a; ++q) S::store(vdst + (i * a + q) * C * ld + vb, o[q]);
            }
          }
        }
      }

      // 2. batched GEMMs in the transform domain
      const int64_t tcols = (t1 - t0 + TB - 1) / TB * TB;
      for (int xi = 0; xi < A2; ++xi) {
        const T* Ux = U + size_t(xi) * KB * C * MR;
        const T* Vx = Vbuf.data() + size_t(xi) * C * ld;
        T* Mx = Mbuf.data() + size_t(xi) * K * ld;
        for (int64_t kb = 0; kb < KB; ++kb) {
          const int kv = static_cast<int>(std::min<int64_t>(MR, K - kb * MR));
          for (int64_t tb = 0; tb < tcols; tb += TB)
            micro_gemm<T>(C, Ux + kb * C * MR, Vx + tb, ld, Mx + kb * MR * ld + tb, ld, kv);
        }
      }

      // 3. output transform
      for (const Segment& g : segs) {
        const int64_t nv = (g.cnt + L - 1) / L * L;
        for (int64_t k = 0; k < K; ++k) {
          const T b = bias ? bias[k] : T(0);
          T* yk = y + (g.n * K + k) * P * Q;
          const T* msrc = Mbuf.data() + k * ld + g.off;
          for (int64_t vb = 0; vb < nv; vb += L) {
            V mm[a][a], e[m][a];
            for (int xi = 0; xi < A2; ++xi)
              mm[xi / a][xi % a] = S::load(msrc + size_t(xi) * K * ld + vb);
            for (int q = 0; q < a; ++q) {
              V col[a], o[m];
              for (int i = 0; i < a; ++i) col[i] = mm[i][q];
              Tr<m, V>::out(col, o);
              for (int i = 0; i < m; ++i) e[i][q] = o[i];
            }
            for (int i = 0; i < m; ++i) {
              V o[m];
              Tr<m, V>::out(e[i], o);
              for (int j = 0; j < m; ++j) S::store(ybuf[i][j], o[j] + b);
            }
            const int64_t nt = std::min<int64_t>(L, g.cnt - vb);
            const int64_t tw = g.tw0 + vb;
            for (int i = 0; i < m; ++i) {
              const int64_t row = g.th * m + i;
              if (row >= P) break;
              T* yr = yk + row * Q + tw * m;
              // Whole tiles that fit in the row are interleaved back without checks.
              const int64_t full = std::min<int64_t>(nt, (Q - tw * m) / m);
              for (int64_t u = 0; u < full; ++u)
                for (int j = 0; j < m; ++j) yr[u * m + j] = ybuf[i][j][u];
              if (full < nt) {
                for (int j = 0; j < m && (tw + full) * m + j < Q; ++j)
                  yr[full * m + j] = ybuf[i][j][full];
              }
            }
          }
        }
      }
    }
  }
}

template <class T, int m>
void fwd_m(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  constexpr int A2 = (m + 2) * (m + 2);
  const int64_t KB = (s.K + MR - 1) / MR;
  std::vector<T> U(size_t(A2) * KB * MR * s.C);
  transform_filters<T, m>(s.K, s.C,
                          [&](int64_t k, int64_t c, double f[3][3]) {
                            const T* g = w + (k * s.C + c) * 9;
                            for (int i = 0; i < 9; ++i) f[i / 3][i % 3] = g[i];
                          },
                          U.data());
  winograd_core<T, m>(s, x, U.data(), bias, y);
}

template <class T, int m>
void bwd_m(const ConvShape& s, const T* gy, const T* w, T* gx) {
  // gx = gy (*) flip(w)^T with padding (2 - top, 2 - left); rows of gy outside [0, P)
  // are zeros, which is exactly the implied bottom / right padding.
  ConvShape t{};
  t.N = s.N; t.C = s.K; t.H = s.P; t.W = s.Q;
  t.K = s.C; t.R = 3; t.S = 3; t.P = s.H; t.Q = s.W;
  t.sh = t.sw = 1; t.dh = t.dw = 1; t.groups = 1;
  t.ph = 2 - s.ph; t.pw = 2 - s.pw;
  constexpr int A2 = (m + 2) * (m + 2);
  const int64_t KB = (t.K + MR - 1) / MR;
  std::vector<T> U(size_t(A2) * KB * MR * t.C);
  transform_filters<T, m>(t.K, t.C,
                          [&](int64_t c, int64_t k, double f[3][3]) {
                            const T* g = w + (k * s.C + c) * 9;
                            for (int i = 0; i < 9; ++i) f[i / 3][i % 3] = g[8 - i];
                          },
                          U.data());
  winograd_core<T, m>(t, gy, U.data(), nullptr, gx);
}

}  // namespace

template <class T>
void conv_winograd_fwd(const ConvShape& s, int m, const T* x, const T* w, const T* bias, T* y) {
  if (s.N == 0 || s.K == 0 || s.P == 0 || s.Q == 0) return;
  if (m == 2) return fwd_m<T, 2>(s, x, w, bias, y);
  if (m == 4) return fwd_m<T, 4>(s, x, w, bias, y);
  throw std::invalid_argument("winograd: m must be 2 or 4");
}

template <class T>
void conv_winograd_bwd_data(const ConvShape& s, int m, const T* gy, const T* w, T* gx) {
  if (s.N == 0 || s.C == 0 || s.H == 0 || s.W == 0) return;
  if (m == 2) return bwd_m<T, 2>(s, gy, w, gx);
  if (m == 4) return bwd_m<T, 4>(s, gy, w, gx);
  throw std::invalid_argument("winograd: m must be 2 or 4");
}

#define FC_INSTANTIATE(T)                                                                     \
  template void conv_winograd_fwd<T>(const ConvShape&, int, const T*, const T*, const T*, T*); \
  template void conv_winograd_bwd_data<T>(const ConvShape&, int, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
