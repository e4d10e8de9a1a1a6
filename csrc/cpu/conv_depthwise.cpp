// Depthwise convolution (groups == C, K = m * C for a channel multiplier m): forward,
// backward-data and backward-weight, any kernel size, stride, padding and dilation.
//
// A depthwise layer has one input channel per filter, so there is no channel reduction
// to block in registers: the work is R*S FMAs per output, memory-bound on wide layers.
// Each task owns one input channel c of one image and a block of output rows. It copies
// the input rows that block reads into a zero-padded, column-phase-split buffer
// (phase f of a row holds padded columns f, f + sw, f + 2 sw, ...), so tap (r, s) of
// output row p is one contiguous vector load at a fixed offset whatever the stride or
// dilation, and stride 2 reads no wasted lanes. Rows outside the input share one zero
// row, so huge padding or dilation costs no memory. The m filters of channel c reuse
// the buffer while it is in L1/L2.
//
// Vectors run along the output row (q); a task is (image, channel, row block), with row
// blocks small enough that N * C * blocks keeps every thread busy at batch 1.
// The forward output stage (bias, residual, clamp) is applied in registers before the
// single store of each output vector.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <omp.h>

namespace fc {
namespace FC_ISA {

namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Geometry of the phase-split row buffer shared by the three passes.
template <class T>
struct DwGeom {
  static constexpr int L = Simd<T>::L;
  int64_t Qv;      // Q rounded up to whole vectors
  int64_t Lj;      // length of one phase of a buffered row
  int64_t rowlen;  // sw * Lj
  std::vector<int64_t> offs;  // tap s -> offset of its first column in a buffered row

  explicit DwGeom(const ConvShape& s) : offs(s.S) {
    Qv = ceil_div(s.Q, L) * L;
    // Columns q < Qv of tap s read phase j = q + (s*dw)/sw; one spare vector of slack.
    Lj = Qv + ((s.S - 1) * s.dw) / s.sw + L;
    rowlen = s.sw * Lj;
    for (int64_t t = 0; t < s.S; ++t) offs[t] = ((t * s.dw) % s.sw) * Lj + (t * s.dw) / s.sw;
  }
};

// One buffered row: out[f * Lj + j] = x[j*sw + f - pw] inside the row, 0 outside.
template <class T>
void fill_row(const T* xr, int64_t W, int64_t pw, int64_t sw, int64_t Lj, T* out) {
  for (int64_t f = 0; f < sw; ++f) {
    T* o = out + f * Lj;
    // Valid j: 0 <= j*sw + f - pw < W.
    const int64_t jlo = std::min(Lj, f >= pw ? 0 : ceil_div(pw - f, sw));
    const int64_t jhi = std::max(jlo, std::min(Lj, W + pw - f > 0 ? ceil_div(W + pw - f, sw) : 0));
    std::fill(o, o + jlo, T(0));
    if (jhi > jlo) {
      const T* src = xr + (jlo * sw + f - pw);  // the first valid column
      if (sw == 1) {
        std::memcpy(o + jlo, src, (jhi - jlo) * sizeof(T));
      } else if (sw == 2) {
        for (int64_t j = 0; j < jhi - jlo; ++j) o[jlo + j] = src[2 * j];
      } else {
        for (int64_t j = 0; j < jhi - jlo; ++j) o[jlo + j] = src[j * sw];
      }
    }
    std::fill(o + jhi, o + Lj, T(0));
  }
}

// The input rows an output-row block [p0, p1) of one channel reads, buffered. Rows
// inside the input get their own slot, every row outside maps to one zero slot.
template <class T>
struct RowBlock {
  int64_t ih_lo = 0, ih_hi = -1;  // buffered input rows (inclusive), clamped to [0, H)
  T* zero = nullptr;
  T* base = nullptr;
  int64_t rowlen = 0;

  // buf must hold (H-bounded row count + 1) * rowlen values; returns values used.
  void build(const ConvShape& s, const DwGeom<T>& g, const T* xc, int64_t p0, int64_t p1,
             std::vector<T>& buf) {
    rowlen = g.rowlen;
    const int64_t first = p0 * s.sh - s.ph, last = (p1 - 1) * s.sh - s.ph + (s.R - 1) * s.dh;
    ih_lo = std::max<int64_t>(0, first);
    ih_hi = std::min<int64_t>(s.H - 1, last);
    const int64_t nrows = std::max<int64_t>(0, ih_hi - ih_lo + 1);
    buf.resize((nrows + 1) * rowlen);
    zero = buf.data();
    std::fill(zero, zero + rowlen, T(0));
    base = zero + rowlen;
    for (int64_t i = 0; i < nrows; ++i)
      fill_row(xc + (ih_lo + i) * s.W, s.W, s.pw, s.sw, g.Lj, base + i * rowlen);
  }
  const T* row(int64_t ih) const {
    return (ih < ih_lo || ih > ih_hi) ? zero : base + (ih - ih_lo) * rowlen;
  }
};

// Splits output rows so that N*C*blocks gives at least `want` tasks.
inline int64_t rows_per_block(const ConvShape& s, int64_t want) {
  const int64_t planes = s.N * s.C;
  if (planes >= want || s.P <= 1) return std::max<int64_t>(1, s.P);
  const int64_t blocks = std::min<int64_t>(s.P, ceil_div(want, planes));
  return ceil_div(s.P, blocks);
}

// One forward output row. RR / SS: the kernel size when known at compile time (0: use
// R / S), so 3x3 and 5x5 unroll into straight-line FMAs.
template <class T, int RR, int SS>
void fwd_row(const ConvShape& s, const DwGeom<T>& g, const T* const* rows, const T* wk,
             const Epilogue<T>& ep, int64_t k, const T* res, T* yrow) {
  using S_ = Simd<T>;
  using V = typename S_::V;
  constexpr int L = S_::L;
  const int64_t R = RR ? RR : s.R, S = SS ? SS : s.S, Q = s.Q;
  const int64_t* offs = g.offs.data();
  const V vb = S_::splat(ep.bias ? ep.bias[k] : T(0));
  const bool clamps = ep.clamps();
  const V vlo = S_::splat(ep.lo), vhi = S_::splat(ep.hi);
  auto finish = [&](V v, int64_t q, int64_t n) {
    v += vb;
    if (n == L) {
      if (res) v += S_::load(res + q);
      if (clamps) {
        v = v < vlo ? vlo : v;  // NaN stays NaN, as torch's relu6 keeps it
        v = v > vhi ? vhi : v;
      }
      S_::store(yrow + q, v);
    } else {
      T tmp[L];
      S_::store(tmp, v);
      for (int64_t i = 0; i < n; ++i) {
        T e = tmp[i];
        if (res) e += res[q + i];
        yrow[q + i] = ep.act(e);
      }
    }
  };
  constexpr int NB = 4;  // vectors per register block: 4 independent FMA chains
  int64_t q = 0;
  for (; q + NB * L <= Q; q += NB * L) {
    V a0 = V{}, a1 = V{}, a2 = V{}, a3 = V{};
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = rows[r] + q;
      for (int64_t t = 0; t < S; ++t) {
        const V wv = S_::splat(wk[r * S + t]);
        const T* p = xr + offs[t];
        a0 += wv * S_::load(p);
        a1 += wv * S_::load(p + L);
        a2 += wv * S_::load(p + 2 * L);
        a3 += wv * S_::load(p + 3 * L);
      }
    }
    finish(a0, q, L);
    finish(a1, q + L, L);
    finish(a2, q + 2 * L, L);
    finish(a3, q + 3 * L, L);
  }
  // Remaining vectors (the last possibly partial: its extra lanes read buffer slack).
  for (; q < Q; q += L) {
    V a0 = V{};
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = rows[r] + q;
      for (int64_t t = 0; t < S; ++t) a0 += S_::splat(wk[r * S + t]) * S_::load(xr + offs[t]);
    }
    finish(a0, q, std::min<int64_t>(L, Q - q));
  }
}

template <class T, int RR, int SS>
void fwd_impl(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y) {
  const DwGeom<T> g(s);
  const int64_t m = s.K / s.C, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = num_threads();
  const int64_t pb = rows_per_block(s, 4 * nt), nblk = ceil_div(s.P, pb);
  const int64_t tasks = s.N * s.C * nblk;
#pragma omp parallel num_threads(threads_for(tasks, 2 * m * RS * pb * s.Q))
  {
    std::vector<T> buf;
    std::vector<const T*> rows(s.R);
    RowBlock<T> rb;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % nblk, nc = task / nblk, c = nc % s.C, n = nc / s.C;
      const int64_t p0 = blk * pb, p1 = std::min(s.P, p0 + pb);
      rb.build(s, g, x + nc * HW, p0, p1, buf);
      for (int64_t j = 0; j < m; ++j) {
        const int64_t k = c * m + j;
        const int64_t yoff = (n * s.K + k) * PQ;
        for (int64_t p = p0; p < p1; ++p) {
          for (int64_t r = 0; r < s.R; ++r) rows[r] = rb.row(p * s.sh - s.ph + r * s.dh);
          const int64_t o = yoff + p * s.Q;
          fwd_row<T, RR, SS>(s, g, rows.data(), w + k * RS, ep, k,
                             ep.residual ? ep.residual + o : nullptr, y + o);
        }
      }
    }
  }
}

}  // namespace

template <class T>
void conv_depthwise_fwd(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y) {
  if (s.R == 3 && s.S == 3) return fwd_impl<T, 3, 3>(s, x, w, ep, y);
  if (s.R == 5 && s.S == 5) return fwd_impl<T, 5, 5>(s, x, w, ep, y);
  if (s.R == 7 && s.S == 7) return fwd_impl<T, 7, 7>(s, x, w, ep, y);
  fwd_impl<T, 0, 0>(s, x, w, ep, y);
}

// grad_x row h of channel c: every (gy row p, tap r) with p*sh - ph + r*dh = h scatters
// gy[p][q] * w[r][t] into the row's phase-split buffer at the forward's offsets; the
// buffer is then un-split into gx. A task owns whole gx rows, so nothing races.
template <class T>
void conv_depthwise_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  using S_ = Simd<T>;
  using V = typename S_::V;
  constexpr int L = S_::L;
  const DwGeom<T> g(s);
  const int64_t m = s.K / s.C, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = num_threads();
  // Row blocks over gx rows (H), chosen as the forward chooses them over P.
  ConvShape sh_ = s;
  sh_.P = s.H;
  const int64_t hb = rows_per_block(sh_, 4 * nt), nblk = ceil_div(s.H, hb);
  const int64_t tasks = s.N * s.C * nblk;
  const int64_t Qfull = (s.Q / L) * L;
#pragma omp parallel num_threads(threads_for(tasks, 2 * m * RS * hb * s.W / (s.sh * s.sw) + hb * s.W))
  {
    std::vector<T> buf(g.rowlen);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % nblk, nc = task / nblk, c = nc % s.C, n = nc / s.C;
      const int64_t h0 = blk * hb, h1 = std::min(s.H, h0 + hb);
      for (int64_t h = h0; h < h1; ++h) {
        std::fill(buf.begin(), buf.end(), T(0));
        bool any = false;
        for (int64_t r = 0; r < s.R; ++r) {
          const int64_t t = h + s.ph - r * s.dh;
          if (t < 0 || t % s.sh) continue;
          const int64_t p = t / s.sh;
          if (p >= s.P) continue;
          any = true;
          for (int64_t j = 0; j < m; ++j) {
            const int64_t k = c * m + j;
            const T* gr = gy + (n * s.K + k) * PQ + p * s.Q;
            const T* wr = w + k * RS + r * s.S;
            for (int64_t tp = 0; tp < s.S; ++tp) {
              T* dst = buf.data() + g.offs[tp];
              const T wt = wr[tp];
              const V wv = S_::splat(wt);
              int64_t q = 0;
              for (; q < Qfull; q += L) S_::store(dst + q, S_::load(dst + q) + wv * S_::load(gr + q));
              for (; q < s.Q; ++q) dst[q] += wt * gr[q];
            }
          }
        }
        T* out = gx + nc * HW + h * s.W;
        if (!any) {
          std::fill(out, out + s.W, T(0));
          continue;
        }
        // Un-split: gx column iw is padded column iw + pw = j*sw + f.
        if (s.sw == 1) {
          const int64_t n_in = std::max<int64_t>(0, std::min<int64_t>(s.W, g.Lj - s.pw));
          std::memcpy(out, buf.data() + s.pw, n_in * sizeof(T));
          std::fill(out + n_in, out + s.W, T(0));
        } else {
          for (int64_t iw = 0; iw < s.W; ++iw) {
            const int64_t tpad = iw + s.pw, jj = tpad / s.sw, f = tpad % s.sw;
            out[iw] = jj < g.Lj ? buf[f * g.Lj + jj] : T(0);
          }
        }
      }
    }
  }
}

// gw[k][r][t] = sum over images and output rows of gy[k] row . buffered x row (shifted).
// Tasks are the forward's (image, channel, row block); each leaves its m*R*S partial
// sums in its own slot and the slots are added in a fixed order (deterministic).
template <class T>
void conv_depthwise_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  using S_ = Simd<T>;
  using V = typename S_::V;
  constexpr int L = S_::L;
  const DwGeom<T> g(s);
  const int64_t m = s.K / s.C, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  // The blocking fixes how the partial sums are grouped, so it must not depend on the
  // thread count (the result would change in the last bits): a fixed 64 tasks at least.
  const int64_t pb = rows_per_block(s, 64), nblk = ceil_div(s.P, pb);
  const int64_t tasks = s.N * s.C * nblk;
  const int64_t per_c = s.N * nblk;  // tasks contributing to one channel
  const int64_t Qfull = (s.Q / L) * L;
  std::vector<double> part(tasks * m * RS);
#pragma omp parallel num_threads(threads_for(tasks, 2 * m * RS * pb * s.Q))
  {
    std::vector<T> buf;
    std::vector<V> acc(RS);
    RowBlock<T> rb;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % nblk, nc = task / nblk, c = nc % s.C, n = nc / s.C;
      const int64_t p0 = blk * pb, p1 = std::min(s.P, p0 + pb);
      rb.build(s, g, x + nc * HW, p0, p1, buf);
      // Slot order: channel-major, then image, then block.
      double* out = part.data() + ((c * per_c) + n * nblk + blk) * m * RS;
      for (int64_t j = 0; j < m; ++j) {
        const int64_t k = c * m + j;
        std::fill(acc.begin(), acc.end(), V{});
        double* o = out + j * RS;
        for (int64_t p = p0; p < p1; ++p) {
          const T* gr = gy + (n * s.K + k) * PQ + p * s.Q;
          for (int64_t r = 0; r < s.R; ++r) {
            const T* xr = rb.row(p * s.sh - s.ph + r * s.dh);
            for (int64_t tp = 0; tp < s.S; ++tp) {
              const T* xs = xr + g.offs[tp];
              V a = acc[r * s.S + tp];
              int64_t q = 0;
              for (; q < Qfull; q += L) a += S_::load(gr + q) * S_::load(xs + q);
              acc[r * s.S + tp] = a;
              // The tail in scalars: lanes past Q must not meet a non-finite x.
              T tail = T(0);
              for (; q < s.Q; ++q) tail += gr[q] * xs[q];
              o[r * s.S + tp] += tail;
            }
          }
        }
        for (int64_t i = 0; i < RS; ++i) {
          T lanes[L];
          S_::store(lanes, acc[i]);
          double sum = 0;
          for (int l = 0; l < L; ++l) sum += lanes[l];
          o[i] += sum;
        }
      }
    }
  }
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t i = 0; i < m * RS; ++i) {
      double sum = 0;
      for (int64_t t = 0; t < per_c; ++t) sum += part[(c * per_c + t) * m * RS + i];
      gw[c * m * RS + i] = static_cast<T>(sum);
    }
}

#define FC_INST(T)                                                                                \
  template void conv_depthwise_fwd<T>(const ConvShape&, const T*, const T*, const Epilogue<T>&,  \
                                      T*);                                                        \
  template void conv_depthwise_bwd_data<T>(const ConvShape&, const T*, const T*, T*);            \
  template void conv_depthwise_bwd_weight<T>(const ConvShape&, const T*, const T*, T*);
FC_INST(float)
FC_INST(double)
#undef FC_INST

}  // namespace FC_ISA
}  // namespace fc
