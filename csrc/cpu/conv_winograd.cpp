// Winograd convolution F(m x m, 3 x 3), m in {2, 4} (Lavin & Gray 2015), forward and
// backward-data, for 3x3 / stride 1 / dilation 1 / groups 1.
//
//   y = A^T [ (G g G^T) . (B^T d B) ] A      per m x m output tile, per channel pair
//
// Layout of the work, per chunk of Tc output tiles. Tiles are numbered by blocks of NB
// images and, inside a block, by (tile row, tile column, image): a tile row of the whole
// block is one run of consecutive tiles, so 7x7 and 14x14 planes (2 to 4 tiles a row)
// still fill the vectors.
//   1. input transform: V[xi][c][t] = (B^T d_{c,t} B)[xi], vectorised over t. The
//      tiles' input columns are gathered once per row into m "phase" rows
//      (ph_p[e] = x[image][m*u + p] for entry e = u * bs + image), so every B^T d B
//      operand is a contiguous vector load and padding / partial tiles are plain zeros
//      in that row buffer. V is stored in panels of TB tile columns ([panel][C][TB]) so
//      the micro-kernel streams it sequentially.
//   2. (m+2)^2 independent GEMMs M[xi] = U[xi] (K x C) * V[xi] (C x Tc), done by a
//      register-blocked micro-kernel (MR filters x NR vectors of tiles).
//   3. output transform y = A^T M A (+ bias), vectorised over t, scattered to NCHW with
//      bottom / right partial tiles clipped.
// Small filter banks: U is computed once and threads take whole chunks of tiles (private
// mode). Large ones (the deep layers): threads share a chunk and take pieces of filters,
// transforming each piece's filters just before multiplying them (fused mode).
//
// Backward-data of a stride-1 correlation is a correlation of grad_out with the kernel
// flipped in space and transposed K <-> C, padded by (2 - top, 2 - left): the same code.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include <omp.h>

#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2)
#include <immintrin.h>
#endif

namespace fc {
namespace FC_ISA {

namespace {


// Micro-kernel register block: MR filters x NR vectors of tiles. 6 x 2 keeps 12
// accumulators + 2 operands + 1 broadcast inside 16 registers (AVX2 / SSE). On AVX-512
// a 12 x 2 block measured no faster once V was aligned and panel-packed.
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

// 1-D filter transform G g (3 -> alpha values). Computed in T: the rounding of 1/6
// and 1/24 is part of the measured F(4,3) error budget.
template <int m, class T, class V>
struct FilterTr;
template <class T, class V>
struct FilterTr<2, T, V> {
  static void run(const V* g, V* u) {
    u[0] = g[0];
    u[1] = (g[0] + g[1] + g[2]) * T(0.5);
    u[2] = (g[0] - g[1] + g[2]) * T(0.5);
    u[3] = g[2];
  }
};
template <class T, class V>
struct FilterTr<4, T, V> {
  static void run(const V* g, V* u) {
    const V s02 = g[0] + g[2];
    const V e = g[0] * T(1.0 / 24) + g[2] * T(1.0 / 6), o = g[1] * T(1.0 / 12);
    u[0] = g[0] * T(0.25);
    u[1] = (s02 + g[1]) * T(-1.0 / 6);
    u[2] = (s02 - g[1]) * T(-1.0 / 6);
    u[3] = e + o;
    u[4] = e - o;
    u[5] = g[2];
  }
};

// Where the taps of the bank live: tap (r, q) of filter k, channel c is
// w[k * fs + c * cs + (flip ? 8 - 3r - q : 3r + q)]. The forward reads w[k][c][3][3]
// (cs = 9); the backward reads the same array as the transposed, flipped bank (fs = 9,
// cs = 9C), so neither needs a rearranged copy of the weights.
template <class T>
struct Taps {
  const T* w;
  int64_t fs, cs;
  bool flip;
};

// Lanes l < n of the vector are p[l * cs]; the rest are zero.
template <class T>
struct TapGather {
  using S = Simd<T>;
  using V = typename S::V;
  static constexpr int L = S::L;
  int64_t cs;
#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2)
  // Hardware gathers take 32-bit lane offsets; wider strides take the scalar path.
  bool hw;
  explicit TapGather(int64_t cs_) : cs(cs_), hw(cs_ * L < (int64_t(1) << 31)) {}
#else
  explicit TapGather(int64_t cs_) : cs(cs_) {}
#endif
  V load(const T* p, int64_t n) const {
#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2)
    if (hw && n == L) return hw_load(p);
#endif
    alignas(64) T tmp[L] = {};
    for (int64_t l = 0; l < n; ++l) tmp[l] = p[l * cs];
    return S::load(tmp);
  }
#if defined(FC_ISA_avx512)
  V hw_load(const T* p) const {
    if constexpr (sizeof(T) == 4) {
      const __m512i idx = _mm512_mullo_epi32(
          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
          _mm512_set1_epi32(static_cast<int>(cs)));
      return reinterpret_cast<V>(_mm512_i32gather_ps(idx, p, 4));
    } else {
      const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                             _mm256_set1_epi32(static_cast<int>(cs)));
      return reinterpret_cast<V>(_mm512_i32gather_pd(idx, p, 8));
    }
  }
#elif defined(FC_ISA_avx2)
  V hw_load(const T* p) const {
    if constexpr (sizeof(T) == 4) {
      const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                             _mm256_set1_epi32(static_cast<int>(cs)));
      return reinterpret_cast<V>(_mm256_i32gather_ps(p, idx, 4));
    } else {
      const __m128i idx = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3),
                                          _mm_set1_epi32(static_cast<int>(cs)));
      return reinterpret_cast<V>(_mm256_i32gather_pd(p, idx, 8));
    }
  }
#endif
};

// Row `row` of U[xi][rows][C] = (G g_{k,c} G^T)[xi] for filter k (zero if k >= K),
// vectorised over c: the taps of L channels are gathered straight from the bank.
template <class T, int m>
void filter_row(int64_t k, int64_t K, int64_t C, const Taps<T>& tp, T* U, int64_t rows,
                int64_t row) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L, a = m + 2;
  if (k >= K) {
    for (int xi = 0; xi < a * a; ++xi)
      std::fill(U + (xi * rows + row) * C, U + (xi * rows + row + 1) * C, T(0));
    return;
  }
  const TapGather<T> gat(tp.cs);
  alignas(64) T tmp[L];
  for (int64_t c = 0; c < C; c += L) {
    const int64_t nc = std::min<int64_t>(L, C - c);
    const T* base = tp.w + k * tp.fs + c * tp.cs;
    V g[3][3], t[a][3];
    for (int rs = 0; rs < 9; ++rs) g[rs / 3][rs % 3] = gat.load(base + (tp.flip ? 8 - rs : rs), nc);
    for (int q = 0; q < 3; ++q) {
      V col[3] = {g[0][q], g[1][q], g[2][q]}, o[a];
      FilterTr<m, T, V>::run(col, o);
      for (int r = 0; r < a; ++r) t[r][q] = o[r];
    }
    for (int r = 0; r < a; ++r) {
      V o[a];
      FilterTr<m, T, V>::run(t[r], o);
      for (int q = 0; q < a; ++q) {
        T* dst = U + ((r * a + q) * rows + row) * C + c;
        if (nc == L) {
          S::store(dst, o[q]);
        } else {
          S::store(tmp, o[q]);
          std::copy(tmp, tmp + nc, dst);
        }
      }
    }
  }
}

// The whole U[xi][Kp][C], in parallel over filters.
template <class T, int m>
void transform_filters(int64_t K, int64_t Kp, int64_t C, const Taps<T>& tp, T* U) {
#pragma omp parallel for schedule(static) num_threads(threads_for(Kp, C * 300))
  for (int64_t k = 0; k < Kp; ++k) filter_row<T, m>(k, K, C, tp, U, Kp, k);
}

// M[0..kv)[0..NR*L) (+)= U (MR rows of ldu) * V (C rows of ldv), kv <= MR; with
// `accumulate` the product is added to the kv rows already in M.
template <class T>
__attribute__((always_inline)) inline void micro_gemm(int64_t C, const T* __restrict Up, int64_t ldu, const T* __restrict Vp, int64_t ldv,
                       T* __restrict Mp, int64_t ldm, int kv, bool accumulate = false) {
  using S = Simd<T>;
  using V = typename S::V;
  V acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j)
      acc[i][j] = accumulate && i < kv ? S::load(Mp + i * ldm + j * S::L) : V{};
  for (int64_t c = 0; c < C; ++c) {
    V b[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) b[j] = S::load(Vp + c * ldv + j * S::L);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V u = S::splat(Up[i * ldu + c]);
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

// Per-thread workspace (common/workspace.h), 64-byte aligned: rows of V and M are whole
// vectors apart, so no vector load straddles two cache lines (malloc'd memory is only
// 16-byte aligned, which made every other V load of the micro-kernel a split load). Slots:
// 0 U (private mode), 1 the shared V (fused mode), 2 / 3 a thread's own V / M (private)
// or U / M blocks (fused). Freed when the thread exits. Contents are never assumed.
struct WinogradScratch;
template <class T>
T* workspace(int slot, size_t n) {
  return thread_workspace<T, WinogradScratch, 4>(slot, n);
}


// One run of consecutive tiles of one tile row th inside a chunk. Tiles are numbered
// image block by image block; inside a block of bs images (n0 .. n0 + bs) the order is
// (th, tw, image): a tile row of all bs images is one run of TW * bs tiles, so images
// of 7x7 or 14x14 (2 to 4 tiles a row) still fill whole vectors.
struct Segment {
  int64_t n0, bs, th, e0, cnt, off;  // e0 = tw * bs + image of the first tile;
                                     // off: column of the first tile in the chunk buffers
};

// The three stages of one chunk of tiles; each takes a sub-range of its loop so the
// cooperative mode can split a chunk between threads.
template <class T, int m>
struct Chunk {
  using S = Simd<T>;
  using V = typename S::V;
  static constexpr int L = S::L, a = m + 2, A2 = a * a, TB = NR * L;
  const ConvShape& s;
  int64_t TW, tiles_img, Kp, ld, phw, NB;  // NB: images interleaved per block
  int64_t vsz;  // V of one transform element: panels of TB tile columns, [panel][C][TB]

  // Columns past the last tile (used .. the end of its panel) are multiplied but never
  // written back; the workspace may hold anything there from an earlier call
  // (denormals would slow the GEMM down), so they are zeroed for channels [c0, c1).
  void zero_tail(int64_t c0, int64_t c1, int64_t used, T* Vbuf) const {
    const int64_t tcols = (used + TB - 1) / TB * TB;
    if (tcols == used) return;
    for (int xi = 0; xi < A2; ++xi)
      for (int64_t c = c0; c < c1; ++c) {
        T* row = Vbuf + xi * vsz + (tcols - TB) * s.C + c * TB;
        std::fill(row + used - (tcols - TB), row + TB, T(0));
      }
  }

  // Column col of V (row 0 at p) = the L lanes of o. A run of tiles can start anywhere,
  // so the vector may straddle two panels. Lanes past the run's end land on columns
  // the next run overwrites (or that are never written back).
  void store_v(T* p, int64_t col, V o) const {
    const int64_t w = col % TB;
    T* dst = p + (col - w) * s.C + w;
    if (w + L <= TB) {
      S::store(dst, o);
    } else {
      const int64_t n0 = TB - w;  // lanes that fit in this panel; the rest open the next
      T* nxt = p + (col - w + TB) * s.C;
#if defined(FC_ISA_avx512)
      if constexpr (sizeof(T) == 4) {
        const __m512 v = reinterpret_cast<__m512>(o);
        const __mmask16 lo = static_cast<__mmask16>((1u << n0) - 1);
        _mm512_mask_storeu_ps(dst, lo, v);
        // Lanes n0.. go to nxt[0..]: shift them down, then store the low L - n0 lanes.
        const __m512i sh = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(n0)));
        _mm512_mask_storeu_ps(nxt, static_cast<__mmask16>((1u << (L - n0)) - 1),
                              _mm512_permutexvar_ps(sh, v));
        return;
      }
#elif defined(FC_ISA_avx2)
      if constexpr (sizeof(T) == 4 && TB == 2 * L) {
        // No masked store (AMD microcodes vmaskmovps stores): this panel's lanes 8..15
        // are read, blended with o's first n0 lanes moved up to lanes w.., and written
        // back, which touches only this channel's row; the rest of o opens the next
        // panel's row with a full store whose upper lanes the next vector (or run)
        // overwrites, as in the scalar copy. The scalar copy cost about a third of the
        // input transform on 56 x 56 planes.
        const __m256 v = reinterpret_cast<__m256>(o);
        const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        T* hi = p + (col - w) * s.C + L;
        const __m256 moved = _mm256_permutevar8x32_ps(
            v, _mm256_add_epi32(iota, _mm256_set1_epi32(static_cast<int>(L - w))));
        const __m256 keep = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(w - L)), iota));
        _mm256_storeu_ps(hi, _mm256_blendv_ps(moved, _mm256_loadu_ps(hi), keep));
        _mm256_storeu_ps(nxt, _mm256_permutevar8x32_ps(
                                  v, _mm256_add_epi32(iota, _mm256_set1_epi32(static_cast<int>(n0)))));
        return;
      }
#endif
      alignas(64) T tmp[L];
      S::store(tmp, o);
      for (int64_t l = 0; l < n0; ++l) dst[l] = tmp[l];
      for (int64_t l = n0; l < L; ++l) nxt[l - n0] = tmp[l];
    }
  }

  // Splits tiles [t0, t1) into runs of one tile row of one image block.
  void segments(int64_t t0, int64_t t1, std::vector<Segment>& segs) const {
    segs.clear();
    const int64_t block = NB * tiles_img;
    for (int64_t t = t0; t < t1;) {
      const int64_t nb = t / block, rem = t - nb * block;
      const int64_t n0 = nb * NB, bs = std::min(NB, s.N - n0);
      const int64_t th = rem / (TW * bs), e0 = rem % (TW * bs);
      const int64_t cnt = std::min(TW * bs - e0, t1 - t);
      segs.push_back({n0, bs, th, e0, cnt, t - t0});
      t += cnt;
    }
  }

  void input(const std::vector<Segment>& segs, int64_t c0, int64_t c1, const T* x, T* Vbuf,
             T* phbuf) const {
    const int64_t C = s.C, H = s.H, W = s.W, plane = H * W;
    for (const Segment& g : segs) {
      const int64_t nv = (g.cnt + L - 1) / L * L, bs = g.bs;
      // Phase rows: ph_p[e] = x[image e % bs][row][m * (e / bs) + p - pw] for the
      // entries the vectors read (one tile column past the last tile).
      const int64_t ne = nv + (a - 1) / m * bs;
      const int64_t in_lo = (s.pw + m - 1) / m;          // first u with m*u - pw >= 0
      const int64_t in_hi = W + s.pw >= m ? (W + s.pw - m) / m + 1 : 0;  // past the last
      for (int64_t c = c0; c < c1; ++c) {
        for (int i = 0; i < a; ++i) {
          const int64_t row = g.th * m - s.ph + i;
          T* pr = phbuf + size_t(i) * m * phw;
          if (row < 0 || row >= H) {
            for (int p = 0; p < m; ++p) std::fill(pr + p * phw, pr + p * phw + ne, T(0));
            continue;
          }
          // Image by image: entries e = u * bs + j of image j are bs apart; the tile
          // columns whose m inputs all lie inside the row are copied without checks.
          for (int64_t j = 0; j < bs; ++j) {
            const int64_t ua = (g.e0 + bs - 1 - j) / bs;  // first u with e >= e0
            if (g.e0 + ne - 1 - j < 0) continue;
            const int64_t ub = (g.e0 + ne - 1 - j) / bs + 1;  // past the last u with e < e0 + ne
            if (ua >= ub) continue;
            const T* xr = x + ((g.n0 + j) * C + c) * plane + row * W;
            T* dst = pr + (ua * bs + j - g.e0);
            const int64_t lo = std::min(ub, std::max(ua, in_lo)), hi = std::max(lo, std::min(ub, in_hi));
            auto checked = [&](int64_t u) {
              for (int p = 0; p < m; ++p) {
                const int64_t col = m * u - s.pw + p;
                dst[p * phw] = (col >= 0 && col < W) ? xr[col] : T(0);
              }
              dst += bs;
            };
            for (int64_t u = ua; u < lo; ++u) checked(u);
            for (int64_t u = lo; u < hi; ++u, dst += bs)
              for (int p = 0; p < m; ++p) dst[p * phw] = xr[m * u - s.pw + p];
            for (int64_t u = hi; u < ub; ++u) checked(u);
          }
        }
        T* vdst = Vbuf + c * TB;
        for (int64_t vb = 0; vb < nv; vb += L) {
          V d[a][a], e[a][a];
          for (int i = 0; i < a; ++i)
            for (int q = 0; q < a; ++q)
              d[i][q] = S::load(phbuf + (size_t(i) * m + q % m) * phw + vb + q / m * bs);
          for (int q = 0; q < a; ++q) {
            V col[a], o[a];
            for (int i = 0; i < a; ++i) col[i] = d[i][q];
            Tr<m, V>::in(col, o);
            for (int i = 0; i < a; ++i) e[i][q] = o[i];
          }
          for (int i = 0; i < a; ++i) {
            V o[a];
            Tr<m, V>::in(e[i], o);
            for (int q = 0; q < a; ++q) store_v(vdst + (i * a + q) * vsz, g.off + vb, o[q]);
          }
        }
      }
    }
  }

  // GEMMs for work items [w0, w1) of (xi, kb) pairs, over tile columns [0, tcols).
  void gemm(int64_t w0, int64_t w1, int64_t tcols, const T* U, const T* Vbuf, T* Mbuf) const {
    const int64_t C = s.C, K = s.K, KB = Kp / MR;
    for (int64_t wi = w0; wi < w1; ++wi) {
      const int64_t xi = wi / KB, kb = wi % KB;
      const T* Ux = U + (xi * Kp + kb * MR) * C;
      const T* Vx = Vbuf + xi * vsz;
      T* Mx = Mbuf + (xi * K + kb * MR) * ld;
      const int kv = static_cast<int>(std::min<int64_t>(MR, K - kb * MR));
      for (int64_t tb = 0; tb < tcols; tb += TB) micro_gemm<T>(C, Ux, C, Vx + tb * C, TB, Mx + tb, ld, kv);
    }
  }

  // M row of filter k is Mbuf + (k - kbase) * ld, transform element xi at + xi * xs.
  void output(const std::vector<Segment>& segs, int64_t k0, int64_t k1, const T* Mbuf,
              int64_t kbase, int64_t xs, const Epilogue<T>& ep, T* y) const {
    const int64_t K = s.K, P = s.P, Q = s.Q;
    alignas(64) T ybuf[m][m][L];
    const T* bias = ep.bias;
    const bool post = ep.has_post();
    for (const Segment& g : segs) {
      const int64_t nv = (g.cnt + L - 1) / L * L;
      for (int64_t k = k0; k < k1; ++k) {
        const T b = bias ? bias[k] : T(0);
        T* yk = y + (g.n0 * K + k) * P * Q;
        const T* msrc = Mbuf + (k - kbase) * ld + g.off;
        for (int64_t vb = 0; vb < nv; vb += L) {
          V mm[a][a], e[m][a];
          for (int xi = 0; xi < A2; ++xi) mm[xi / a][xi % a] = S::load(msrc + xi * xs + vb);
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
          const int64_t rows = std::min<int64_t>(m, P - g.th * m);
          int64_t u = (g.e0 + vb) / g.bs, jn = (g.e0 + vb) % g.bs;
          for (int64_t l = 0; l < nt; ++l) {
            T* yt = yk + jn * K * P * Q + g.th * m * Q + u * m;
            const int64_t cols = std::min<int64_t>(m, Q - u * m);
            if (post) {  // residual and clamp in the store (epilogue.h); bias is in ybuf
              const T* rt = ep.residual ? ep.residual + (yt - y) : nullptr;
              for (int i = 0; i < rows; ++i)
                for (int j = 0; j < cols; ++j)
                  yt[i * Q + j] = ep.act(ybuf[i][j][l] + (rt ? rt[i * Q + j] : T(0)));
            } else if (cols == m) {
              for (int i = 0; i < rows; ++i)
                for (int j = 0; j < m; ++j) yt[i * Q + j] = ybuf[i][j][l];
            } else {
              for (int i = 0; i < rows; ++i)
                for (int j = 0; j < cols; ++j) yt[i * Q + j] = ybuf[i][j][l];
            }
            if (++jn == g.bs) {
              jn = 0;
              ++u;
            }
          }
        }
      }
    }
  }
};

template <class T, int m>
void winograd_core(const ConvShape& s, const T* x, const Taps<T>& tp, const Epilogue<T>& ep, T* y,
                   const T* Upre = nullptr) {
  using CH = Chunk<T, m>;
  constexpr int L = CH::L, a = CH::a, A2 = CH::A2, TB = CH::TB;
  const int64_t C = s.C, K = s.K;
  const int64_t Kp = (K + MR - 1) / MR * MR, KB = Kp / MR;
  const int64_t TH = (s.P + m - 1) / m, TW = (s.Q + m - 1) / m;
  const int64_t tiles_img = TH * TW, NT = s.N * tiles_img;
  const int nth_max = num_threads();
  const int64_t u_bytes = int64_t(A2) * Kp * C * int64_t(sizeof(T));
  auto round_tb = [](int64_t v) { return std::max<int64_t>(TB, v / TB * TB); };

  // Private mode: each thread transforms, multiplies and writes back its own chunks of
  // tiles against a U computed once; suits many tiles and a U that stays in cache.
  // Fused mode (large U): a private chunk would re-stream all of U from memory for a
  // handful of tiles, so the threads share one big chunk of V, then each takes a range
  // of filters and, MR filters at a time, transforms them (U block stays in L1/L2),
  // multiplies and writes the outputs back: U never goes to memory.
  const bool fused = u_bytes > (int64_t(3) << 20);
  int64_t Tc;
  if (fused) {
    Tc = std::min<int64_t>(round_tb((int64_t(12) << 20) / (int64_t(A2) * C * int64_t(sizeof(T)))),
                           16 * TB);
    Tc = std::min(Tc, (NT + TB - 1) / TB * TB);
  } else {
    const int64_t per_tile = int64_t(A2) * (C + K) * int64_t(sizeof(T));
    Tc = std::min<int64_t>(round_tb((int64_t(768) << 10) / per_tile), 32 * TB);
    Tc = std::min(Tc, round_tb(((NT + nth_max - 1) / nth_max + TB - 1) / TB * TB));
  }
  const int64_t nchunks = (NT + Tc - 1) / Tc;
  const int64_t ld = Tc + L;  // slack: a segment's last vector may spill past its tiles
  // Enough images per block that a tile row of the block spans >= 4 vectors (small
  // images would otherwise leave most vector lanes idle in the transforms).
  const int64_t NB = std::max<int64_t>(1, std::min<int64_t>(s.N, (4 * L + TW - 1) / TW));
  const int64_t seg_max = (std::min(TW * NB, Tc) + L - 1) / L * L;  // longest run, rounded
  const int64_t vsz = (Tc + TB) * C;  // one panel of slack for the last run's spill
  const CH ch{s, TW, tiles_img, Kp, ld, seg_max + NB, NB, vsz};

  if (!fused) {
    const T* U = Upre;
    if (!U) {
      T* Uw = workspace<T>(0, size_t(A2) * Kp * C);
      transform_filters<T, m>(K, Kp, C, tp, Uw);
      U = Uw;
    }
    const int64_t flops_chunk = int64_t(2) * A2 * K * C * Tc;
#pragma omp parallel num_threads(threads_for(nchunks, flops_chunk))
    {
      T* Vbuf = workspace<T>(2, size_t(A2) * vsz);
      T* Mbuf = workspace<T>(3, size_t(A2) * K * ld);
      std::vector<T> phbuf(size_t(a) * m * ch.phw, T(0));
      std::vector<Segment> segs;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t t0 = c * Tc, t1 = std::min(NT, t0 + Tc);
        ch.segments(t0, t1, segs);
        ch.input(segs, 0, C, x, Vbuf, phbuf.data());
        ch.zero_tail(0, C, t1 - t0, Vbuf);
        ch.gemm(0, A2 * KB, (t1 - t0 + TB - 1) / TB * TB, U, Vbuf, Mbuf);
        ch.output(segs, 0, K, Mbuf, 0, K * ld, ep, y);
      }
    }
    return;
  }

  T* Vbuf = workspace<T>(1, size_t(A2) * vsz);
  const int nth = threads_for(KB, int64_t(2) * A2 * MR * C * Tc);
  // Filter panels per piece: as many as keep the piece's transformed filters (A2 x KG*MR
  // x C) within ~1 MB, i.e. in L2, where the GEMM reads them back. Fewer panels mean V
  // streams from L3 more often, but measured faster than spilling U (2 at C = 512).
  const int64_t KG = std::max<int64_t>(
      1, std::min<int64_t>(8, (int64_t(1) << 20) / (int64_t(A2) * MR * C * int64_t(sizeof(T)))));
  const int64_t CI = 16, CB = (C + CI - 1) / CI;  // input transform: channels per piece
#pragma omp parallel num_threads(nth)
  {
    std::vector<T> phbuf(size_t(a) * m * ch.phw, T(0));
    T* Ublk = workspace<T>(2, size_t(A2) * KG * MR * C);
    T* Mblk = workspace<T>(3, size_t(A2) * KG * MR * ld);
    std::vector<Segment> segs;
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t t0 = c * Tc, t1 = std::min(NT, t0 + Tc);
      const int64_t tcols = (t1 - t0 + TB - 1) / TB * TB;
      ch.segments(t0, t1, segs);  // each thread its own copy: no barrier needed
      // Both loops hand out small pieces on demand (and end in a barrier): on a shared
      // machine a thread that loses its core for a while then delays the others by
      // one piece, not by its whole half of the work.
#pragma omp for schedule(dynamic, 1)
      for (int64_t cb = 0; cb < CB; ++cb) {
        const int64_t c0 = cb * CI, c1 = std::min(C, (cb + 1) * CI);
        ch.input(segs, c0, c1, x, Vbuf, phbuf.data());
        ch.zero_tail(c0, c1, t1 - t0, Vbuf);
      }
      // KG micro-panels of filters per piece: each V block loaded into cache is used by
      // KG * MR filters before the next one, so V streams KB / KG times, not KB.
#pragma omp for schedule(dynamic, 1)
      for (int64_t kg = 0; kg < KB; kg += KG) {
        const int64_t nkb = std::min<int64_t>(KG, KB - kg), k0 = kg * MR;
        const int64_t rows = nkb * MR, kv = std::min(rows, K - k0);
        // Prepacked filters (inference) are already U[xi][Kp][C]: read this piece's rows.
        if (!Upre)
          for (int64_t i = 0; i < rows; ++i)
            filter_row<T, m>(k0 + i, K, C, tp, Ublk, rows, i);
        for (int xi = 0; xi < A2; ++xi) {
          const T* Vx = Vbuf + size_t(xi) * vsz;
          const T* Ux = Upre ? Upre + (size_t(xi) * Kp + k0) * C : Ublk + size_t(xi) * rows * C;
          T* Mx = Mblk + size_t(xi) * rows * ld;
          // Panel-outer: the MR x C filter panel stays in L1 while the V columns of the
          // chunk (an L2-sized block) stream past it.
          for (int64_t b = 0; b < nkb; ++b) {
            const int kvb = static_cast<int>(std::min<int64_t>(MR, kv - b * MR));
            if (kvb <= 0) break;
            for (int64_t tb = 0; tb < tcols; tb += TB)
              micro_gemm<T>(C, Ux + b * MR * C, C, Vx + tb * C, TB, Mx + b * MR * ld + tb, ld, kvb);
          }
        }
        ch.output(segs, k0, k0 + kv, Mblk, k0, rows * ld, ep, y);
      }
    }
  }
}

template <class T, int m>
void fwd_m(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y,
           const T* Upre = nullptr) {
  winograd_core<T, m>(s, x, Taps<T>{w, 9 * s.C, 9, false}, ep, y, Upre);
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
  winograd_core<T, m>(t, gy, Taps<T>{w, 9, 9 * s.C, true}, Epilogue<T>{}, gx);
}

}  // namespace

// Winograd mixes every input of a tile into every output of it, and its transforms
// amplify values by up to ~1e2 (F(2,3)) / ~1e4 (F(4,3)) before they cancel: one NaN or
// Inf input would poison the whole tile (torch: only the outputs that read it), +Inf
// would become Inf - Inf = NaN, and finite float32 inputs near 1e36 would overflow.
// Such inputs are rare, and one max-abs pass finds them at a few percent of the
// convolution's cost; the direct kernel then computes the exact IEEE answer.
template <class T>
T max_abs(const T* p, int64_t n) {
  T mx = 0;
  bool bad = false;
  constexpr T big = std::numeric_limits<T>::max();
#pragma omp parallel for schedule(static) reduction(max : mx) reduction(|| : bad) \
    num_threads(threads_for(n / 4096 + 1, 4096))
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {
    const int64_t i1 = std::min(n, i0 + 4096);
    T m = 0;
    bool b = false;
#pragma omp simd reduction(max : m) reduction(|| : b)
    for (int64_t i = i0; i < i1; ++i) {
      const T a = std::fabs(p[i]);
      b = b || !(a <= big);  // Inf or NaN
      m = a > m ? a : m;
    }
    mx = std::max(mx, m);
    bad = bad || b;
  }
  return bad ? std::numeric_limits<T>::infinity() : mx;
}

// Whether the transforms stay finite for inputs up to xmax and filters up to wmax.
template <class T>
bool winograd_safe(T xmax, T wmax, int64_t C, int m) {
  const double amp = m == 4 ? 1e4 : 1e2;
  const double bound = double(xmax) * double(wmax) * 9.0 * double(std::max<int64_t>(C, 1)) * amp;
  return bound <= 0.5 * double(std::numeric_limits<T>::max());  // false for Inf / NaN too
}

template <class T>
void conv_winograd_fwd(const ConvShape& s, int m, const T* x, const T* w, const Epilogue<T>& ep,
                       T* y) {
  if (s.N == 0 || s.K == 0 || s.P == 0 || s.Q == 0) return;
  if (!winograd_safe(max_abs(x, s.N * s.C * s.H * s.W), max_abs(w, s.K * s.C * 9), s.C, m))
    return conv_direct_fwd(s, x, w, ep, y);
  if (m == 2) fwd_m<T, 2>(s, x, w, ep, y);
  else if (m == 4) fwd_m<T, 4>(s, x, w, ep, y);
  else throw std::invalid_argument("winograd: m must be 2 or 4");
}

// Inference: the transformed filters U[xi][Kp][C] (Kp = K rounded up to MR) computed
// once, so that conv_winograd_fwd_packed skips the per-call transform (at batch 1 on
// 7 x 7 and 14 x 14 layers the transform costs as much as the rest of the forward).
// The last value holds max |w| (Inf if w has a non-finite value) for winograd_safe.
int64_t conv_winograd_packed_len(int64_t K, int64_t C, int m) {
  const int64_t a = m + 2, Kp = (K + MR - 1) / MR * MR;
  return a * a * Kp * C + 1;
}

template <class T>
void conv_winograd_pack(int64_t K, int64_t C, int m, const T* w, T* U) {
  const Taps<T> tp{w, 9 * C, 9, false};
  const int64_t Kp = (K + MR - 1) / MR * MR;
  if (m == 2) transform_filters<T, 2>(K, Kp, C, tp, U);
  else if (m == 4) transform_filters<T, 4>(K, Kp, C, tp, U);
  else throw std::invalid_argument("winograd: m must be 2 or 4");
  U[conv_winograd_packed_len(K, C, m) - 1] = max_abs(w, K * C * 9);
}

template <class T>
void conv_winograd_fwd_packed(const ConvShape& s, int m, const T* x, const T* w, const T* U,
                              const Epilogue<T>& ep, T* y) {
  if (s.N == 0 || s.K == 0 || s.P == 0 || s.Q == 0) return;
  const T wmax = U[conv_winograd_packed_len(s.K, s.C, m) - 1];
  if (!winograd_safe(max_abs(x, s.N * s.C * s.H * s.W), wmax, s.C, m))
    return conv_direct_fwd(s, x, w, ep, y);
  if (m == 2) fwd_m<T, 2>(s, x, w, ep, y, U);
  else if (m == 4) fwd_m<T, 4>(s, x, w, ep, y, U);
  else throw std::invalid_argument("winograd: m must be 2 or 4");
}

template <class T>
void conv_winograd_bwd_data(const ConvShape& s, int m, const T* gy, const T* w, T* gx) {
  if (s.N == 0 || s.C == 0 || s.H == 0 || s.W == 0) return;
  if (!winograd_safe(max_abs(gy, s.N * s.K * s.P * s.Q), max_abs(w, s.K * s.C * 9), s.K, m))
    return conv_direct_bwd_data(s, gy, w, gx);
  if (m == 2) return bwd_m<T, 2>(s, gy, w, gx);
  if (m == 4) return bwd_m<T, 4>(s, gy, w, gx);
  throw std::invalid_argument("winograd: m must be 2 or 4");
}

#define FC_INSTANTIATE(T)                                                                     \
  template void conv_winograd_fwd<T>(const ConvShape&, int, const T*, const T*, const Epilogue<T>&, T*); \
  template void conv_winograd_bwd_data<T>(const ConvShape&, int, const T*, const T*, T*); \
  template void conv_winograd_pack<T>(int64_t, int64_t, int, const T*, T*);            \
  template void conv_winograd_fwd_packed<T>(const ConvShape&, int, const T*, const T*, const T*, \
                                            const Epilogue<T>&, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
