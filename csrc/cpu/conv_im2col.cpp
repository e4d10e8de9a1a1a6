// im2col convolution on the packed GEMM (cpu/gemm/gemm_driver.h), any stride /
// padding / dilation / groups.
//
// The column matrix is never materialised for the forward and backward-weight passes:
// the GEMM's B packer reads the image directly while it fills its cache-sized panels
// ("im2col inside packing"), so those passes need only the GEMM's own packing buffers.
// One GEMM spans the whole batch (column j = image n, output pixel pq) so small late
// layers (7x7 outputs) still give the micro-kernel long rows.
//
//   forward:        y_g[Kg, (n,pq)]   = W_g[Kg, CRS] . col_g[CRS, (n,pq)]      (+ bias)
//   backward data:  col_g[CRS, (n,pq)] = W_g^T . gy_g[Kg, (n,pq)], then col2im (scatter-add)
//   backward weight: gw_g[Kg, CRS]     = gy_g[Kg, (n,pq)] . col_g^T  (k runs over the batch)
//
// Backward data does need columns (col2im sums overlapping windows); it works on chunks
// of columns (and rows, for huge filters) whose size never exceeds a fixed budget.
#include "cpu/kernel_common.h"
#include "cpu/gemm/gemm_driver.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#if defined(FC_ISA_avx512)
#include <immintrin.h>
#endif

namespace fc {
namespace FC_ISA {

namespace {
using gemm_detail::Blk;

// Column workspace cap for backward data. 8 MiB stays in this CPU's 32 MiB L3, so
// col2im reads back what the GEMM just wrote without a trip to memory.
// FASTCONV_IM2COL_BUDGET (bytes) may lower it, which the tests use to force chunking.
constexpr int64_t kColBudget = int64_t(8) << 20;
int64_t col_budget() {
  const char* e = std::getenv("FASTCONV_IM2COL_BUDGET");
  if (e && *e) {
    const long long v = std::atoll(e);
    if (v > 0) return std::min<int64_t>(std::max<int64_t>(v, 64), kColBudget);
  }
  return kColBudget;
}

// dst[0, n) = src[0, n). The packers copy runs of one output row (7 to 56 values on
// ResNet layers), where a memcpy call costs more than the copy: 20% of a 7x7 layer.
template <class T>
inline void copy_short(T* __restrict dst, const T* __restrict src, int64_t n) {
#if defined(FC_ISA_avx512)
  constexpr int64_t L = 64 / int64_t(sizeof(T));
  int64_t i = 0;
  // GCC turns a plain copy loop (even of intrinsics) back into a memcpy call; the empty
  // volatile asm keeps the loop a loop.
  for (; i + L <= n; i += L) {
    _mm512_storeu_si512(dst + i, _mm512_loadu_si512(src + i));
    __asm__ volatile("");
  }
  if (i < n) {
    // Masked lanes are neither read nor written, so the tail never strays past the row.
    const unsigned m = (1u << (n - i)) - 1u;
    if constexpr (sizeof(T) == 4)
      _mm512_mask_storeu_ps(dst + i, __mmask16(m), _mm512_maskz_loadu_ps(__mmask16(m), src + i));
    else
      _mm512_mask_storeu_pd(dst + i, __mmask8(m), _mm512_maskz_loadu_pd(__mmask8(m), src + i));
  }
#else
  std::memcpy(dst, src, sizeof(T) * n);
#endif
}

template <class T>
inline void zero_short(T* dst, int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t] = T(0);
}

// dst[t] = src[w0 + t*sw] where 0 <= w0 + t*sw < W, else 0; src == nullptr: all zeros
// (the whole input row lies in the padding).
template <class T>
inline void gather_row(T* __restrict dst, const T* __restrict src, int64_t w0, int64_t len,
                       int64_t sw, int64_t W) {
  if (!src) {
    zero_short(dst, len);
    return;
  }
  if (sw == 1) {
    // The common case, without the divisions below.
    const int64_t lo = std::min(len, std::max<int64_t>(0, -w0));
    const int64_t hi = std::min(len, std::max(lo, W - w0));
    zero_short(dst, lo);
    copy_short(dst + lo, src + w0 + lo, hi - lo);
    zero_short(dst + hi, len - hi);
    return;
  }
  int64_t lo = w0 >= 0 ? 0 : (-w0 + sw - 1) / sw;
  int64_t hi = W - 1 - w0 < 0 ? 0 : (W - 1 - w0) / sw + 1;
  lo = std::min(lo, len);
  hi = std::min(std::max(hi, lo), len);
  for (int64_t t = 0; t < lo; ++t) dst[t] = T(0);
  if (sw == 1) {
    if (hi > lo) std::memcpy(dst + lo, src + w0 + lo, sizeof(T) * (hi - lo));
  } else {
    for (int64_t t = lo; t < hi; ++t) dst[t] = src[w0 + t * sw];
  }
  for (int64_t t = hi; t < len; ++t) dst[t] = T(0);
}

// Geometry of group g's slice of the problem. Columns j = n*PQ + p*Q + q.
template <class T>
struct Geo {
  const ConvShape& s;
  int64_t HW, PQ, RS;
  explicit Geo(const ConvShape& sh) : s(sh), HW(sh.H * sh.W), PQ(sh.P * sh.Q), RS(sh.R * sh.S) {}
  // Input row for filter row (c, r) at output (n, p), or null if it is padding.
  // x points at this group's first channel of image 0.
  const T* in_row(const T* x, int64_t n, int64_t c, int64_t r, int64_t p) const {
    const int64_t h = p * s.sh - s.ph + r * s.dh;
    if (h < 0 || h >= s.H) return nullptr;
    return x + (n * s.C + c) * HW + h * s.W;
  }
};

// Column cursor: walks j = n*PQ + p*Q + q in runs that stay on one output row.
struct Cursor {
  int64_t n, p, q;
  Cursor(int64_t j, int64_t PQ, int64_t Q) : n(j / PQ), p((j % PQ) / Q), q(j % Q) {}
  void advance(int64_t len, int64_t P, int64_t Q) {
    q += len;
    if (q == Q) {
      q = 0;
      if (++p == P) {
        p = 0;
        ++n;
      }
    }
  }
};

// Forward B = col_g[CRS, (n,pq)], packed straight from the image.
template <class T>
struct Im2colPackB {
  Geo<T> g;
  const T* x;  // group's first channel, image 0
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* dst) const {
    constexpr int NR = Blk<T>::NR;
    const ConvShape& s = g.s;
    const int64_t np = (nc + NR - 1) / NR;
    if (nc % NR) {
      T* last = dst + (np - 1) * kc * NR;
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int64_t l = nc % NR; l < NR; ++l) last[kk * NR + l] = T(0);
    }
    for (int64_t kk = 0; kk < kc; ++kk) {
      const int64_t row = k0 + kk, c = row / g.RS, r = (row % g.RS) / s.S, t = row % s.S;
      const int64_t woff = t * s.dw - s.pw;
      Cursor cur(j0, g.PQ, s.Q);
      for (int64_t jj = 0; jj < nc;) {
        const int64_t run = std::min(s.Q - cur.q, nc - jj);
        const T* src = g.in_row(x, cur.n, c, r, cur.p);
        // Split the run where it crosses a panel boundary: each piece is contiguous.
        for (int64_t u = 0; u < run;) {
          const int64_t j = jj + u, lane = j % NR;
          const int64_t piece = std::min(run - u, NR - lane);
          gather_row(dst + (j / NR) * kc * NR + kk * NR + lane, src,
                     (cur.q + u) * s.sw + woff, piece, s.sw, s.W);
          u += piece;
        }
        cur.advance(run, s.P, s.Q);
        jj += run;
      }
    }
  }
};

// gy_g viewed as a [Kg, (n,pq)] matrix: row k of image n is contiguous.
template <class T>
struct GyView {
  const T* gy;  // group's first output channel, image 0
  int64_t KPQ, PQ;
  const T* at(int64_t k, int64_t j) const { return gy + (j / PQ) * KPQ + k * PQ + j % PQ; }
};

// Backward-data B = gy_g[Kg, (n,pq)].
template <class T>
struct GyPackB {
  GyView<T> v;
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* dst) const {
    constexpr int NR = Blk<T>::NR;
    for (int64_t jp = 0; jp < nc; jp += NR, dst += kc * NR) {
      const int64_t nr = std::min<int64_t>(NR, nc - jp);
      for (int64_t kk = 0; kk < kc; ++kk) {
        T* d = dst + kk * NR;
        for (int64_t u = 0; u < nr;) {
          const int64_t j = j0 + jp + u;
          const int64_t run = std::min(nr - u, v.PQ - j % v.PQ);
          copy_short(d + u, v.at(k0 + kk, j), run);
          u += run;
        }
        for (int64_t u = nr; u < NR; ++u) d[u] = T(0);
      }
    }
  }
};

// Backward-weight A = gy_g[Kg, (n,pq)] with k running over (n,pq).
template <class T>
struct GyPackA {
  GyView<T> v;
  void operator()(int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    for (int64_t ip = 0; ip < mc; ip += MR, dst += kc * MR) {
      const int64_t mr = std::min<int64_t>(MR, mc - ip);
      for (int64_t i = 0; i < mr; ++i) {
        for (int64_t kk = 0; kk < kc;) {
          const int64_t j = k0 + kk;
          const int64_t run = std::min(kc - kk, v.PQ - j % v.PQ);
          const T* src = v.at(i0 + ip + i, j);
          T* d = dst + kk * MR + i;
          for (int64_t u = 0; u < run; ++u) d[u * MR] = src[u];
          kk += run;
        }
      }
      for (int64_t i = mr; i < MR; ++i)
        for (int64_t kk = 0; kk < kc; ++kk) dst[kk * MR + i] = T(0);
    }
  }
};

// Backward-weight B = col_g^T[(n,pq), CRS], packed straight from the image.
template <class T>
struct Col2PackB {
  Geo<T> g;
  const T* x;
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* dst) const {
    constexpr int NR = Blk<T>::NR;
    const ConvShape& s = g.s;
    alignas(64) T tmp[256];
    for (int64_t jj = 0; jj < nc; ++jj) {
      const int64_t row = j0 + jj, c = row / g.RS, r = (row % g.RS) / s.S, t = row % s.S;
      const int64_t woff = t * s.dw - s.pw;
      T* d = dst + (jj / NR) * kc * NR + jj % NR;
      Cursor cur(k0, g.PQ, s.Q);
      for (int64_t kk = 0; kk < kc;) {
        const int64_t run = std::min(s.Q - cur.q, kc - kk);
        const T* src = g.in_row(x, cur.n, c, r, cur.p);
        for (int64_t u = 0; u < run; u += 256) {
          const int64_t len = std::min<int64_t>(256, run - u);
          gather_row(tmp, src, (cur.q + u) * s.sw + woff, len, s.sw, s.W);
          T* dd = d + (kk + u) * NR;
          for (int64_t e = 0; e < len; ++e) dd[e * NR] = tmp[e];
        }
        cur.advance(run, s.P, s.Q);
        kk += run;
      }
    }
    if (nc % NR) {
      T* last = dst + ((nc - 1) / NR) * kc * NR;
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int64_t l = nc % NR; l < NR; ++l) last[kk * NR + l] = T(0);
    }
  }
};

// Column j = (n, pq) of an NCHW tensor with `per` pixels per plane and `stride`
// elements per image.
struct BatchCols {
  int64_t per, stride;
  int64_t operator()(int64_t j) const { return (j / per) * stride + j % per; }
};

struct ColScratch {
  static gemm_detail::Scratch& get() {
    static thread_local gemm_detail::Scratch s;
    return s;
  }
};
}  // namespace

template <class T>
void conv_im2col_fwd(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y) {
  const T* bias = ep.bias;
  const Geo<T> geo(s);
  const int64_t Cg = s.Cg(), Kg = s.Kg(), CRS = Cg * geo.RS;
  const int nt = num_threads();
  for (int64_t g = 0; g < s.groups; ++g) {
    // Residual and clamp ride on the GEMM's final-k-pass stores (gemm_driver.h Post).
    gemm_detail::Post<T> post;
    post.on = ep.has_post();
    post.residual = ep.residual ? ep.residual + g * Kg * geo.PQ : nullptr;
    post.lo = ep.lo;
    post.hi = ep.hi;
    gemm_detail::run<T>(Kg, s.N * geo.PQ, CRS, T(1),
                        gemm_detail::StridedPackA<T>{w + g * Kg * CRS, CRS, false},
                        Im2colPackB<T>{geo, x + g * Cg * geo.HW}, T(0), y + g * Kg * geo.PQ,
                        geo.PQ, BatchCols{geo.PQ, s.K * geo.PQ}, bias ? bias + g * Kg : nullptr,
                        nt, post);
  }
}

template <class T>
void conv_im2col_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const Geo<T> geo(s);
  const int64_t Cg = s.Cg(), Kg = s.Kg(), CRS = Cg * geo.RS;
  const int nt = num_threads();
  for (int64_t g = 0; g < s.groups; ++g) {
    const GyView<T> v{gy + g * Kg * geo.PQ, s.K * geo.PQ, geo.PQ};
    gemm_detail::run<T>(Kg, CRS, s.N * geo.PQ, T(1), GyPackA<T>{v},
                        Col2PackB<T>{geo, x + g * Cg * geo.HW}, T(0), gw + g * Kg * CRS, CRS,
                        gemm_detail::ColIdentity{}, nullptr, nt);
  }
}

template <class T>
void conv_im2col_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const Geo<T> geo(s);
  const int64_t Cg = s.Cg(), Kg = s.Kg(), CRS = Cg * geo.RS, HW = geo.HW;
  const int64_t cols = s.N * geo.PQ;
  const int nt = num_threads();
  const bool pointwise = s.R == 1 && s.S == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 &&
                         s.pw == 0 && s.P == s.H && s.Q == s.W;
  if (pointwise) {
    // A 1x1 stride-1 column matrix is the input itself: write gx directly.
    for (int64_t g = 0; g < s.groups; ++g) {
      const GyView<T> v{gy + g * Kg * geo.PQ, s.K * geo.PQ, geo.PQ};
      gemm_detail::run<T>(Cg, cols, Kg, T(1),
                          gemm_detail::StridedPackA<T>{w + g * Kg * CRS, CRS, true},
                          GyPackB<T>{v}, T(0), gx + g * Cg * HW, HW, BatchCols{HW, s.C * HW},
                          nullptr, nt);
    }
    return;
  }
  if (s.sh == 1 && s.sw == 1) {
    // Stride 1: the data gradient is itself a forward convolution of gy with the
    // filters transposed (K <-> C) and flipped, padded by d*(R-1) - pad. That runs on
    // the fused-im2col forward path: no column buffer, no col2im scatter. The padding
    // may come out negative (pad > d*(R-1)); the packer's bounds checks handle that.
    ConvShape t = s;
    t.C = s.K; t.H = s.P; t.W = s.Q;
    t.K = s.C; t.P = s.H; t.Q = s.W;
    t.ph = s.dh * (s.R - 1) - s.ph;
    t.pw = s.dw * (s.S - 1) - s.pw;
    const int64_t RS = geo.RS;
    T* wt = static_cast<T*>(ColScratch::get().get(sizeof(T) * s.K * Cg * RS));
    // wt[g][c][k][R-1-r][S-1-s] = w[g][k][c][r][s]
    for (int64_t g = 0; g < s.groups; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c) {
          const T* src = w + ((g * Kg + k) * Cg + c) * RS;
          T* dst = wt + ((g * Cg + c) * Kg + k) * RS;
          for (int64_t i = 0; i < RS; ++i) dst[RS - 1 - i] = src[i];
        }
    conv_im2col_fwd<T>(t, gy, wt, Epilogue<T>{}, gx);
    return;
  }
  {
    const int64_t total = s.N * s.C * HW;
    const int zt = threads_for(total / 4096 + 1, 4096);
#pragma omp parallel for schedule(static) num_threads(zt) if (zt > 1)
    for (int64_t i = 0; i < total; i += 4096)
      std::memset(gx + i, 0, sizeof(T) * std::min<int64_t>(4096, total - i));
  }
  const int64_t budget = col_budget() / int64_t(sizeof(T));
  const int64_t L = std::max<int64_t>(1, std::min(cols, budget / std::max<int64_t>(CRS, 1)));
  const int64_t rows_chunk = std::max<int64_t>(1, std::min(CRS, budget / L));
  T* col = static_cast<T*>(ColScratch::get().get(sizeof(T) * rows_chunk * L));
  for (int64_t g = 0; g < s.groups; ++g) {
    const GyView<T> v{gy + g * Kg * geo.PQ, s.K * geo.PQ, geo.PQ};
    const T* wg = w + g * Kg * CRS;
    T* gxg = gx + g * Cg * HW;
    for (int64_t j0 = 0; j0 < cols; j0 += L) {
      const int64_t nc = std::min(L, cols - j0);
      for (int64_t r0 = 0; r0 < CRS; r0 += rows_chunk) {
        const int64_t nr = std::min(rows_chunk, CRS - r0);
        // col[nr, nc] = W_g^T[r0:r0+nr, :] . gy_g[:, j0:j0+nc]
        struct Shifted {
          GyPackB<T> b;
          int64_t j0;
          void operator()(int64_t k0, int64_t kc, int64_t jj, int64_t n, T* d) const {
            b(k0, kc, jj + j0, n, d);
          }
        };
        gemm_detail::run<T>(nr, nc, Kg, T(1), gemm_detail::StridedPackA<T>{wg + r0, CRS, true},
                            Shifted{GyPackB<T>{v}, j0}, T(0), col, nc,
                            gemm_detail::ColIdentity{}, nullptr, nt);
        // col2im: rows of one input channel only touch that channel's planes, so
        // threads own channels and never collide.
        const int64_t c0 = r0 / geo.RS, c1 = (r0 + nr - 1) / geo.RS + 1;
        const int ct = threads_for(c1 - c0, nc * geo.RS);
#pragma omp parallel for schedule(static) num_threads(ct) if (ct > 1)
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t rlo = std::max(r0, c * geo.RS), rhi = std::min(r0 + nr, (c + 1) * geo.RS);
          for (int64_t row = rlo; row < rhi; ++row) {
            const int64_t r = (row % geo.RS) / s.S, t = row % s.S;
            const int64_t woff = t * s.dw - s.pw;
            const T* src = col + (row - r0) * nc;
            Cursor cur(j0, geo.PQ, s.Q);
            for (int64_t jj = 0; jj < nc;) {
              const int64_t run = std::min(s.Q - cur.q, nc - jj);
              const int64_t h = cur.p * s.sh - s.ph + r * s.dh;
              if (h >= 0 && h < s.H) {
                T* dst = gxg + (cur.n * s.C + c) * HW + h * s.W;
                const int64_t w0 = cur.q * s.sw + woff;
                int64_t lo = w0 >= 0 ? 0 : (-w0 + s.sw - 1) / s.sw;
                int64_t hi = s.W - 1 - w0 < 0 ? 0 : (s.W - 1 - w0) / s.sw + 1;
                lo = std::min(lo, run);
                hi = std::min(std::max(hi, lo), run);
                const T* sp = src + jj;
                if (s.sw == 1) {
                  for (int64_t u = lo; u < hi; ++u) dst[w0 + u] += sp[u];
                } else {
                  for (int64_t u = lo; u < hi; ++u) dst[w0 + u * s.sw] += sp[u];
                }
              }
              cur.advance(run, s.P, s.Q);
              jj += run;
            }
          }
        }
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                  \
  template void conv_im2col_fwd<T>(const ConvShape&, const T*, const T*, const Epilogue<T>&, T*); \
  template void conv_im2col_bwd_data<T>(const ConvShape&, const T*, const T*, T*);        \
  template void conv_im2col_bwd_weight<T>(const ConvShape&, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
