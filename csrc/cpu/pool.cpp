// Max, average and adaptive-average pooling, forward and backward, NCHW.
//
// Every pooling window is separable: a kernel first reduces the window's rows into one
// row buffer (contiguous loads, so the ISA's vector width is used), then reduces that
// buffer along the row with the window's stride. Work is split over the N*C planes;
// each thread owns its row buffers, so the kernels are thread-safe and deterministic
// (results do not depend on the thread count).
#include "cpu/kernel_common.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {

// Planes are handed out dynamically, in chunks of about 1/8 of a thread's share: on a
// machine shared with other processes a descheduled thread then delays the others by
// one chunk, not by its whole share. Results do not depend on which thread runs a plane.
inline int64_t dyn_chunk(int64_t items, int nt) {
  return std::max<int64_t>(1, items / (8 * static_cast<int64_t>(nt)));
}

// Taps t in [t0, t1) of a window starting at `start` (stride `dil`) that land in
// [0, size). Empty (t0 == t1) when none do.
inline void tap_range(int64_t start, int64_t k, int64_t dil, int64_t size, int64_t& t0,
                      int64_t& t1) {
  t0 = start >= 0 ? 0 : (-start + dil - 1) / dil;
  t1 = start > size - 1 ? 0 : std::min(k, (size - 1 - start) / dil + 1);
  if (t0 > t1) t0 = t1;
}

// ------------------------------------------------------------------------ max pooling
//
// PyTorch's rule, which the indices must reproduce: scanning the window row-major, a
// value replaces the current maximum if it is larger or NaN; the default is -inf at the
// first in-bounds position. So without NaN the first maximum wins, with NaN the last
// NaN wins. After the vertical pass each column holds its winning row; the horizontal
// pass merges columns left to right, and because a later column c > best column, the
// row-major order of two candidates is decided by their rows alone:
//   tie (v == best):  candidate comes first  <=> row <  best row
//   NaN candidate:    candidate comes later  <=> row >= best row

template <class T>
inline bool is_nan(T v) { return v != v; }

// Outputs are merged in blocks of kBlock: a fixed trip count lets the compiler keep a
// block in vector registers and leaves no branchy scalar remainder (a branch per
// element on random data mispredicts half the time).
constexpr int64_t kBlock = 16;
constexpr int32_t kPadRow = std::numeric_limits<int32_t>::max();

// Row buffers of one thread. The column buffers carry `lead` entries of padding on the
// left and enough on the right for every tap of every window, holding -inf with row
// kPadRow: such an entry never wins the merge against an in-bounds one (it is not
// larger, not NaN, and loses ties because its row is larger), so the horizontal pass
// needs no bounds tests. A window with no in-bounds tap (possible with dilation) keeps
// -inf and row kPadRow, and reports index -1.
template <class T>
struct MaxRows {
  int64_t lead = 0, kwe = 0;
  std::vector<T> vmax, best;
  std::vector<int32_t> vrow, brow, bcol;
  std::vector<T> even, odd;  // max_plane_rows at row stride 2

  MaxRows(const PoolShape& s, bool idx) {
    lead = s.pw;
    // Taps j with -pw + j*dw > W-1 are outside the input for every output: dropping
    // them changes nothing and bounds the buffer by the input geometry.
    kwe = std::min(s.kw, (s.W - 1 + s.pw) / s.dw + 1);
    const int64_t last = (s.Q - 1) * s.sw - s.pw + (kwe - 1) * s.dw;  // last column read
    const int64_t n = lead + std::max(s.W, last + 1);
    vmax.assign(n, -std::numeric_limits<T>::infinity());
    vrow.assign(n, kPadRow);
    const int64_t nb = std::max(s.Q, kBlock);
    best.resize(nb);
    if (idx) {
      brow.resize(nb);
      bcol.resize(nb);
    }
    if (!idx && s.sw == 2) {
      even.resize((n + 1) / 2);
      odd.resize(n / 2 + 1);
    }
  }
};

// Merges the taps of outputs q0 .. q0+kBlock-1 into best/brow/bcol[q0 ..]. CLAMP (rows
// with fewer than kBlock outputs) makes the extra lanes recompute the last output.
template <class T, bool IDX, int SW, bool CLAMP>
inline void max_block(const PoolShape& s, int64_t q0, int64_t sw_rt, int64_t lead, int64_t kwe,
                      const T* vbase, const int32_t* rbase, T* best, int32_t* brow,
                      int32_t* bcol) {
  (void)rbase; (void)brow; (void)bcol;
  const int64_t sw = SW ? SW : sw_rt;
  auto pos = [&](int64_t l) { return (CLAMP ? std::min<int64_t>(q0 + l, s.Q - 1) : q0 + l) * sw; };
  T* bb = best + q0;
  for (int64_t l = 0; l < kBlock; ++l) bb[l] = vbase[pos(l)];
  if (IDX)
    for (int64_t l = 0; l < kBlock; ++l) {
      brow[q0 + l] = rbase[pos(l)];
      bcol[q0 + l] = static_cast<int32_t>(pos(l) - lead);
    }
  for (int64_t j = 1; j < kwe; ++j) {
    const int64_t off = j * s.dw;
    if (IDX) {
      int32_t* br = brow + q0;
      int32_t* bc = bcol + q0;
      for (int64_t l = 0; l < kBlock; ++l) {
        const int64_t i = pos(l) + off;
        const T v = vbase[i], b = bb[l];
        const int32_t r = rbase[i], rb = br[l];
        const bool vn = is_nan(v);
        const bool take = (vn & (!is_nan(b) | (r >= rb))) |
                          (!vn & ((v > b) | ((v == b) & (r < rb))));
        bb[l] = take ? v : b;
        br[l] = take ? r : rb;
        bc[l] = take ? static_cast<int32_t>(i - lead) : bc[l];
      }
    } else {
      for (int64_t l = 0; l < kBlock; ++l) {
        const T v = vbase[pos(l) + off], b = bb[l];
        bb[l] = ((v > b) | is_nan(v)) ? v : b;
      }
    }
  }
}

template <class T, bool IDX, int SW>
void max_plane(const PoolShape& s, const T* x, T* y, int64_t* idx, MaxRows<T>& rows) {
  const int64_t W = s.W, Q = s.Q, sw = SW ? SW : s.sw, lead = rows.lead;
  T* vm = rows.vmax.data() + lead;  // column w of the row lives at vm[w]
  int32_t* vr = rows.vrow.data() + lead;
  const T* vbase = rows.vmax.data();
  const int32_t* rbase = rows.vrow.data();
  T* best = rows.best.data();
  int32_t* brow = IDX ? rows.brow.data() : nullptr;
  int32_t* bcol = IDX ? rows.bcol.data() : nullptr;
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t p = 0; p < s.P; ++p) {
    T* yr = y + p * Q;
    int64_t* ir = IDX ? idx + p * Q : nullptr;
    const int64_t hstart = p * s.sh - s.ph;
    int64_t t0, t1;
    tap_range(hstart, s.kh, s.dh, s.H, t0, t1);
    if (t0 == t1) {  // unreachable for PyTorch-valid shapes; kept memory-safe
      for (int64_t q = 0; q < Q; ++q) {
        yr[q] = ninf;
        if (IDX) ir[q] = -1;
      }
      continue;
    }
    // Vertical pass: per column, the winning value and row.
    {
      const int32_t h = static_cast<int32_t>(hstart + t0 * s.dh);
      const T* xr = x + h * W;
      for (int64_t w = 0; w < W; ++w) vm[w] = xr[w];
      if (IDX)
        for (int64_t w = 0; w < W; ++w) vr[w] = h;
    }
    for (int64_t t = t0 + 1; t < t1; ++t) {
      const int32_t h = static_cast<int32_t>(hstart + t * s.dh);
      const T* xr = x + h * W;
      if (IDX) {
        for (int64_t w = 0; w < W; ++w) {
          const T v = xr[w];
          const bool take = (v > vm[w]) | is_nan(v);
          vm[w] = take ? v : vm[w];
          vr[w] = take ? h : vr[w];
        }
      } else {
        for (int64_t w = 0; w < W; ++w) {
          const T v = xr[w];
          vm[w] = ((v > vm[w]) | is_nan(v)) ? v : vm[w];
        }
      }
    }
    // Horizontal pass, one block of outputs at a time; buffer index of tap j for output
    // q is q*sw + j*dw (>= 0: the buffer starts pw columns left of the input). The last
    // block overlaps the one before rather than running past Q; overlapping outputs are
    // recomputed to the same values.
    if (Q < kBlock) {
      max_block<T, IDX, SW, true>(s, 0, sw, lead, rows.kwe, vbase, rbase, best, brow, bcol);
    } else {
      for (int64_t q0 = 0;; q0 += kBlock) {
        const int64_t qs = std::min(q0, Q - kBlock);
        max_block<T, IDX, SW, false>(s, qs, sw, lead, rows.kwe, vbase, rbase, best, brow, bcol);
        if (qs + kBlock >= Q) break;
      }
    }
    for (int64_t q = 0; q < Q; ++q) yr[q] = best[q];
    if (IDX)
      for (int64_t q = 0; q < Q; ++q)
        ir[q] = brow[q] == kPadRow ? -1 : int64_t(brow[q]) * W + bcol[q];
  }
}

// max_plane without indices (inference), no dilation along rows, row stride 1 or 2: the
// same vertical pass, then the horizontal one as whole-row loops over contiguous
// buffers (stride 2 reads the row's even and odd columns from two deinterleaved
// copies), which vectorise where max_block's per-output gathers do not (3-5x on the
// ResNet stem's 3x3/2 pool). Same values as max_plane: the max, or NaN where a window
// holds one.
template <class T>
inline T nan_max(T b, T v) {
  return ((v > b) | is_nan(v)) ? v : b;
}

template <class T, int SW>
void max_plane_rows(const PoolShape& s, const T* x, T* y, MaxRows<T>& rows) {
  static_assert(SW == 1 || SW == 2, "row stride");
  const int64_t W = s.W, Q = s.Q, kwe = rows.kwe;
  const int64_t n = static_cast<int64_t>(rows.vmax.size());
  T* vb = rows.vmax.data();
  T* vm = vb + rows.lead;
  T* ev = rows.even.data();
  T* od = rows.odd.data();
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t p = 0; p < s.P; ++p) {
    T* __restrict yr = y + p * Q;
    const int64_t hstart = p * s.sh - s.ph;
    int64_t t0, t1;
    tap_range(hstart, s.kh, s.dh, s.H, t0, t1);
    if (t0 == t1) {
      std::fill(yr, yr + Q, ninf);
      continue;
    }
    const T* x0 = x + (hstart + t0 * s.dh) * W;
    std::copy(x0, x0 + W, vm);
    for (int64_t t = t0 + 1; t < t1; ++t) {
      const T* __restrict xr = x + (hstart + t * s.dh) * W;
      for (int64_t w = 0; w < W; ++w) vm[w] = nan_max(vm[w], xr[w]);
    }
    if (SW == 1) {
      std::copy(vb, vb + Q, yr);
      for (int64_t j = 1; j < kwe; ++j) {
        const T* __restrict src = vb + j;
        for (int64_t q = 0; q < Q; ++q) yr[q] = nan_max(yr[q], src[q]);
      }
    } else {
      for (int64_t i = 0; 2 * i < n; ++i) ev[i] = vb[2 * i];
      for (int64_t i = 0; 2 * i + 1 < n; ++i) od[i] = vb[2 * i + 1];
      std::copy(ev, ev + Q, yr);
      for (int64_t j = 1; j < kwe; ++j) {
        const T* __restrict src = (j & 1 ? od : ev) + j / 2;
        for (int64_t q = 0; q < Q; ++q) yr[q] = nan_max(yr[q], src[q]);
      }
    }
  }
}

// One plane window by window, visiting only the taps inside the input (tap_range), in
// PyTorch's row-major order. For windows far wider than the input (a kernel of 10^9
// columns over a 1-pixel row) the row buffers of max_plane would be padding-sized and
// its tap loop as long as the kernel; here the cost is the input taps actually read.
template <class T, bool IDX>
void max_plane_sparse(const PoolShape& s, const T* x, T* y, int64_t* idx) {
  for (int64_t p = 0; p < s.P; ++p) {
    int64_t h0, h1;
    tap_range(p * s.sh - s.ph, s.kh, s.dh, s.H, h0, h1);
    for (int64_t q = 0; q < s.Q; ++q) {
      int64_t w0, w1;
      tap_range(q * s.sw - s.pw, s.kw, s.dw, s.W, w0, w1);
      T best = -std::numeric_limits<T>::infinity();
      int64_t bi = -1;
      for (int64_t i = h0; i < h1; ++i) {
        const int64_t h = p * s.sh - s.ph + i * s.dh;
        for (int64_t j = w0; j < w1; ++j) {
          const int64_t at = h * s.W + q * s.sw - s.pw + j * s.dw;
          const T v = x[at];
          if (bi < 0 || v > best || is_nan(v)) {
            best = v;
            bi = at;
          }
        }
      }
      y[p * s.Q + q] = best;
      if (IDX) idx[p * s.Q + q] = bi;
    }
  }
}

// Whether max_plane's row buffers (padding + every tap's reach) would dwarf the input row.
inline bool max_needs_sparse(const PoolShape& s) {
  const int64_t kwe = std::min(s.kw, (s.W - 1 + s.pw) / s.dw + 1);
  return s.pw + (kwe - 1) * s.dw > 4 * s.W + 256;
}

template <class T, bool IDX>
void max_fwd_impl(const PoolShape& s, const T* x, T* y, int64_t* idx) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q;
  if (max_needs_sparse(s)) {
    const int nt = threads_for(planes, PQ * 16 + HW);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t nc = 0; nc < planes; ++nc)
      max_plane_sparse<T, IDX>(s, x + nc * HW, y + nc * PQ, IDX ? idx + nc * PQ : nullptr);
    return;
  }
  const int nt = threads_for(planes, PQ * s.kh * s.kw + HW);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    MaxRows<T> rows(s, IDX);
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      int64_t* ip = IDX ? idx + nc * PQ : nullptr;
      const T* xp = x + nc * HW;
      T* yp = y + nc * PQ;
      if (!IDX && s.dw == 1 && s.sw == 1)
        max_plane_rows<T, 1>(s, xp, yp, rows);
      else if (!IDX && s.dw == 1 && s.sw == 2)
        max_plane_rows<T, 2>(s, xp, yp, rows);
      else if (s.sw == 1)
        max_plane<T, IDX, 1>(s, xp, yp, ip, rows);
      else if (s.sw == 2)
        max_plane<T, IDX, 2>(s, xp, yp, ip, rows);
      else
        max_plane<T, IDX, 0>(s, xp, yp, ip, rows);
    }
  }
}

// ------------------------------------------------------------------------ average pooling

struct AvgWin {
  int64_t lo, hi, padded;  // clipped [lo, hi) and the extent counted with padding
};

inline AvgWin avg_win(int64_t o, int64_t size, int64_t k, int64_t stride, int64_t pad) {
  const int64_t start = o * stride - pad;
  const int64_t end = std::min(start + k, size + pad);
  return {std::max<int64_t>(start, 0), std::min(end, size), end - start};
}

inline int64_t avg_divisor(const AvgWin& h, const AvgWin& w, bool cip, int64_t override_) {
  if (override_) return override_;
  return cip ? h.padded * w.padded : (h.hi - h.lo) * (w.hi - w.lo);
}

}  // namespace

template <class T>
void max_pool2d_fwd(const PoolShape& s, const T* x, T* y, int64_t* idx) {
  if (idx) max_fwd_impl<T, true>(s, x, y, idx);
  else max_fwd_impl<T, false>(s, x, y, nullptr);
}

template <class T>
void max_pool2d_bwd(const PoolShape& s, const T* gy, const int64_t* idx, T* gx) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q;
  const int nt = threads_for(planes, PQ + HW);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel for schedule(dynamic, ch) num_threads(nt) if (nt > 1)
  for (int64_t nc = 0; nc < planes; ++nc) {
    T* g = gx + nc * HW;
    const T* gyp = gy + nc * PQ;
    const int64_t* ip = idx + nc * PQ;
    std::fill(g, g + HW, T(0));
    for (int64_t i = 0; i < PQ; ++i) {
      const int64_t k = ip[i];
      if (static_cast<uint64_t>(k) < static_cast<uint64_t>(HW)) g[k] += gyp[i];
    }
  }
}

template <class T>
void avg_pool2d_fwd(const PoolShape& s, bool cip, int64_t div_override, const T* x, T* y) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q, W = s.W;
  const int nt = threads_for(planes, PQ * s.kh * s.kw + HW);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<T> vs(W);
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T* xp = x + nc * HW;
      T* yp = y + nc * PQ;
      for (int64_t p = 0; p < s.P; ++p) {
        const AvgWin hw = avg_win(p, s.H, s.kh, s.sh, s.ph);
        T* yr = yp + p * s.Q;
        if (hw.lo >= hw.hi) {  // the whole row of windows is padding: 0, as PyTorch
          std::fill(yr, yr + s.Q, T(0));
          continue;
        }
        const T* x0 = xp + hw.lo * W;
        for (int64_t w = 0; w < W; ++w) vs[w] = x0[w];
        for (int64_t h = hw.lo + 1; h < hw.hi; ++h) {
          const T* xr = xp + h * W;
          for (int64_t w = 0; w < W; ++w) vs[w] += xr[w];
        }
        for (int64_t q = 0; q < s.Q; ++q) {
          const AvgWin ww = avg_win(q, W, s.kw, s.sw, s.pw);
          if (ww.lo >= ww.hi) {
            yr[q] = T(0);
            continue;
          }
          T acc = T(0);
          for (int64_t w = ww.lo; w < ww.hi; ++w) acc += vs[w];
          yr[q] = acc / static_cast<T>(avg_divisor(hw, ww, cip, div_override));
        }
      }
    }
  }
}

template <class T>
void avg_pool2d_bwd(const PoolShape& s, bool cip, int64_t div_override, const T* gy, T* gx) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q, W = s.W;
  const int nt = threads_for(planes, PQ * s.kh * s.kw + HW);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<T> t(W);
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      T* g = gx + nc * HW;
      const T* gyp = gy + nc * PQ;
      std::fill(g, g + HW, T(0));
      for (int64_t p = 0; p < s.P; ++p) {
        const AvgWin hw = avg_win(p, s.H, s.kh, s.sh, s.ph);
        if (hw.lo >= hw.hi) continue;
        std::fill(t.begin(), t.end(), T(0));
        for (int64_t q = 0; q < s.Q; ++q) {
          const AvgWin ww = avg_win(q, W, s.kw, s.sw, s.pw);
          if (ww.lo >= ww.hi) continue;
          const T v = gyp[p * s.Q + q] / static_cast<T>(avg_divisor(hw, ww, cip, div_override));
          for (int64_t w = ww.lo; w < ww.hi; ++w) t[w] += v;
        }
        for (int64_t h = hw.lo; h < hw.hi; ++h) {
          T* gr = g + h * W;
          for (int64_t w = 0; w < W; ++w) gr[w] += t[w];
        }
      }
    }
  }
}

// ------------------------------------------------------------------------ adaptive average
// Sums accumulate in double: a window can be the whole plane (global average pooling).

namespace {
constexpr int64_t kSmallPlane = 256;
inline int64_t ad_start(int64_t i, int64_t size, int64_t out) { return (i * size) / out; }
inline int64_t ad_end(int64_t i, int64_t size, int64_t out) {
  return ((i + 1) * size + out - 1) / out;
}
}  // namespace

template <class T>
void adaptive_avg_pool2d_fwd(const PoolShape& s, const T* x, T* y) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q, W = s.W;
  if (PQ == 1) {  // global average pooling: one contiguous reduction per plane
    const int nt = threads_for(planes, HW);
    const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel for schedule(dynamic, ch) num_threads(nt) if (nt > 1)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T* xp = x + nc * HW;
      double acc = 0;
      if (HW <= kSmallPlane) {
        // Small planes (7x7 in ResNets) are summed in T across the vector lanes: each
        // lane adds few terms, and the widening conversions would cost more than the sum.
        T a = T(0);
#pragma omp simd reduction(+ : a)
        for (int64_t i = 0; i < HW; ++i) a += xp[i];
        acc = static_cast<double>(a);
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < HW; ++i) acc += static_cast<double>(xp[i]);
      }
      y[nc] = static_cast<T>(acc / static_cast<double>(HW));
    }
    return;
  }
  const int nt = threads_for(planes, HW + PQ * 4);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<double> vs(W);
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T* xp = x + nc * HW;
      T* yp = y + nc * PQ;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t h0 = ad_start(p, s.H, s.P), h1 = ad_end(p, s.H, s.P);
        std::fill(vs.begin(), vs.end(), 0.0);
        for (int64_t h = h0; h < h1; ++h) {
          const T* xr = xp + h * W;
          for (int64_t w = 0; w < W; ++w) vs[w] += static_cast<double>(xr[w]);
        }
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t w0 = ad_start(q, W, s.Q), w1 = ad_end(q, W, s.Q);
          double acc = 0;
          for (int64_t w = w0; w < w1; ++w) acc += vs[w];
          yp[p * s.Q + q] = static_cast<T>(acc / static_cast<double>((h1 - h0) * (w1 - w0)));
        }
      }
    }
  }
}

template <class T>
void adaptive_avg_pool2d_bwd(const PoolShape& s, const T* gy, T* gx) {
  const int64_t planes = s.N * s.C, HW = s.H * s.W, PQ = s.P * s.Q, W = s.W;
  if (PQ == 1) {
    const int nt = threads_for(planes, HW);
    const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel for schedule(dynamic, ch) num_threads(nt) if (nt > 1)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T v = static_cast<T>(static_cast<double>(gy[nc]) / static_cast<double>(HW));
      T* g = gx + nc * HW;
      for (int64_t i = 0; i < HW; ++i) g[i] = v;
    }
    return;
  }
  const int nt = threads_for(planes, HW + PQ * 4);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<double> t(W);
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      T* g = gx + nc * HW;
      const T* gyp = gy + nc * PQ;
      std::fill(g, g + HW, T(0));
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t h0 = ad_start(p, s.H, s.P), h1 = ad_end(p, s.H, s.P);
        std::fill(t.begin(), t.end(), 0.0);
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t w0 = ad_start(q, W, s.Q), w1 = ad_end(q, W, s.Q);
          const double v =
              static_cast<double>(gyp[p * s.Q + q]) / static_cast<double>((h1 - h0) * (w1 - w0));
          for (int64_t w = w0; w < w1; ++w) t[w] += v;
        }
        for (int64_t h = h0; h < h1; ++h) {
          T* gr = g + h * W;
          for (int64_t w = 0; w < W; ++w) gr[w] += static_cast<T>(t[w]);
        }
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                    \
  template void max_pool2d_fwd<T>(const PoolShape&, const T*, T*, int64_t*);                \
  template void max_pool2d_bwd<T>(const PoolShape&, const T*, const int64_t*, T*);          \
  template void avg_pool2d_fwd<T>(const PoolShape&, bool, int64_t, const T*, T*);           \
  template void avg_pool2d_bwd<T>(const PoolShape&, bool, int64_t, const T*, T*);           \
  template void adaptive_avg_pool2d_fwd<T>(const PoolShape&, const T*, T*);                 \
  template void adaptive_avg_pool2d_bwd<T>(const PoolShape&, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
