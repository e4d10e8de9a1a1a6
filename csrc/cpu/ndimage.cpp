// scipy.ndimage-style correlation filters (fastconv.ndimage): a 1-D correlation along
// any axis with SciPy's border modes (the core of every separable filter), SciPy's
// running-mean uniform filter, and a 2-D correlation for non-separable weights.
//
// Every sum is taken in the order scipy/ndimage/src/ni_filters.c takes it, with fused
// multiply-adds off for this file (pragma below), so float64 (and integer input, which
// fastconv/ndimage.py computes in float64 as SciPy does) gives SciPy's bits. Vectors run
// across independent outputs, never across the terms of one sum.
//
// Axis layout: x[outer, n, inner]. inner == 1 (the contiguous last axis): each line is
// copied, extended by the border mode, into a private buffer and the outputs of the line
// are computed a vector at a time. inner > 1: output row i combines whole input rows
// (row pointers resolved once through the border map), vectorised along the row.
#pragma GCC optimize("fp-contract=off")
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <type_traits>
#include <cstring>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {

// Below this many multiply-adds one thread is faster than waking the pool (see
// csrc/cpu/signal.cpp for the measurement on the 2-core machine).
constexpr double kMinParallelWork = double(1 << 23);

// acc + a * b. float64 keeps SciPy's separate multiply and add (bit-exact results);
// float32, which cannot match SciPy's float64 sums bit for bit anyway, uses a fused
// multiply-add where the ISA has one (explicit intrinsics: fp-contract is off here).
template <class V>
inline V madd(V acc, V a, V b) {
#if defined(FC_ISA_avx512)
  if constexpr (sizeof(V) == 64 && std::is_same_v<decltype(a[0] + 0.0f), float>)
    return reinterpret_cast<V>(_mm512_fmadd_ps(reinterpret_cast<__m512>(a),
                                               reinterpret_cast<__m512>(b),
                                               reinterpret_cast<__m512>(acc)));
#elif defined(FC_ISA_avx2)
  if constexpr (sizeof(V) == 32 && std::is_same_v<decltype(a[0] + 0.0f), float>)
    return reinterpret_cast<V>(_mm256_fmadd_ps(reinterpret_cast<__m256>(a),
                                               reinterpret_cast<__m256>(b),
                                               reinterpret_cast<__m256>(acc)));
#endif
  return acc + a * b;
}

// Source index of extended coordinate i on an axis of length n > 0; -1 reads cval.
// Reflect (period 2n) and mirror (period 2n - 2) repeat for extensions longer than the
// line, as SciPy's NI_ExtendLine does.
inline int64_t nd_map(int64_t i, int64_t n, int mode) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case 0:
      return -1;
    case 1:
      return i < 0 ? 0 : n - 1;
    case 2: {
      const int64_t p = 2 * n;
      int64_t r = i % p;
      if (r < 0) r += p;
      return r < n ? r : p - 1 - r;
    }
    case 3: {
      if (n == 1) return 0;
      const int64_t p = 2 * n - 2;
      int64_t r = i % p;
      if (r < 0) r += p;
      return r < n ? r : p - r;
    }
    default: {
      int64_t r = i % n;
      if (r < 0) r += n;
      return r;
    }
  }
}

// dst[p] = ext(src)[p - shift] for p < len (src has n elements).
template <class T>
inline void extend_line(const T* src, int64_t n, int64_t shift, int64_t len, int mode, T cval,
                        T* dst) {
  const int64_t lo = std::min(std::max<int64_t>(shift, 0), len);
  const int64_t hi = std::min(std::max<int64_t>(n + shift, lo), len);
  for (int64_t p = 0; p < lo; ++p) {
    const int64_t s = nd_map(p - shift, n, mode);
    dst[p] = s < 0 ? cval : src[s];
  }
  if (hi > lo) std::memcpy(dst + lo, src + lo - shift, (hi - lo) * sizeof(T));
  for (int64_t p = hi; p < len; ++p) {
    const int64_t s = nd_map(p - shift, n, mode);
    dst[p] = s < 0 ? cval : src[s];
  }
}

// NB vectors of outputs o[0 .. NB*VL) of one line: o[t] = SciPy's sum over b[t .. t+L).
template <class T, int NB, int SYM>
inline void corr1d_block(const T* b, const T* w, int64_t L, T* o) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  V acc[NB];
  if (SYM != 0) {
    const int64_t c = L / 2;
    const V wc = S::splat(w[c]);
    for (int v = 0; v < NB; ++v) acc[v] = S::load(b + c + v * VL) * wc;
    for (int64_t k = 0; k < c; ++k) {
      const V wk = S::splat(w[k]);
      for (int v = 0; v < NB; ++v) {
        const V l = S::load(b + k + v * VL), r = S::load(b + 2 * c - k + v * VL);
        acc[v] = madd(acc[v], SYM > 0 ? l + r : l - r, wk);
      }
    }
  } else {
    const V wl = S::splat(w[L - 1]);
    for (int v = 0; v < NB; ++v) acc[v] = S::load(b + L - 1 + v * VL) * wl;
    for (int64_t k = 0; k + 1 < L; ++k) {
      const V wk = S::splat(w[k]);
      for (int v = 0; v < NB; ++v) acc[v] = madd(acc[v], S::load(b + k + v * VL), wk);
    }
  }
  for (int v = 0; v < NB; ++v) S::store(o + v * VL, acc[v]);
}

template <class T, int SYM>
void corr1d_lines(const T* x, T* y, int64_t outer, int64_t n, const T* w, int64_t L,
                  int64_t shift, int mode, T cval, int nt) {
  constexpr int NB = 4;
  constexpr int64_t chunk = NB * Simd<T>::L;
  const int64_t nch = (n + chunk - 1) / chunk;
  const int64_t blen = nch * chunk + L - 1;
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> buf(static_cast<size_t>(blen)), tail(static_cast<size_t>(chunk));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      extend_line(x + o * n, n, shift, n + L - 1, mode, cval, buf.data());
      T* yo = y + o * n;
      int64_t i = 0;
      for (; i + chunk <= n; i += chunk) corr1d_block<T, NB, SYM>(buf.data() + i, w, L, yo + i);
      if (i < n) {
        corr1d_block<T, NB, SYM>(buf.data() + i, w, L, tail.data());
        std::memcpy(yo + i, tail.data(), (n - i) * sizeof(T));
      }
    }
  }
}

// One output row of the strided case: out[c] = SciPy's sum over rows rp[0 .. L).
template <class T, int SYM>
inline void corr1d_row(const T* const* rp, const T* w, int64_t L, int64_t inner, T* out) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  constexpr int NB = 4;
  const int64_t c = L / 2;
  int64_t j = 0;
  for (; j + NB * VL <= inner; j += NB * VL) {
    V acc[NB];
    if (SYM != 0) {
      const V wc = S::splat(w[c]);
      for (int v = 0; v < NB; ++v) acc[v] = S::load(rp[c] + j + v * VL) * wc;
      for (int64_t k = 0; k < c; ++k) {
        const V wk = S::splat(w[k]);
        for (int v = 0; v < NB; ++v) {
          const V l = S::load(rp[k] + j + v * VL), r = S::load(rp[2 * c - k] + j + v * VL);
          acc[v] = madd(acc[v], SYM > 0 ? l + r : l - r, wk);
        }
      }
    } else {
      const V wl = S::splat(w[L - 1]);
      for (int v = 0; v < NB; ++v) acc[v] = S::load(rp[L - 1] + j + v * VL) * wl;
      for (int64_t k = 0; k + 1 < L; ++k) {
        const V wk = S::splat(w[k]);
        for (int v = 0; v < NB; ++v) acc[v] = madd(acc[v], S::load(rp[k] + j + v * VL), wk);
      }
    }
    for (int v = 0; v < NB; ++v) S::store(out + j + v * VL, acc[v]);
  }
  for (; j < inner; ++j) {
    T a;
    if (SYM != 0) {
      a = rp[c][j] * w[c];
      for (int64_t k = 0; k < c; ++k)
        a += (SYM > 0 ? rp[k][j] + rp[2 * c - k][j] : rp[k][j] - rp[2 * c - k][j]) * w[k];
    } else {
      a = rp[L - 1][j] * w[L - 1];
      for (int64_t k = 0; k + 1 < L; ++k) a += rp[k][j] * w[k];
    }
    out[j] = a;
  }
}

template <class T, int SYM>
void corr1d_strided(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, const T* w,
                    int64_t L, int64_t shift, int mode, T cval, int nt) {
  std::vector<int64_t> idx(static_cast<size_t>(n + L - 1));
  for (int64_t p = 0; p < n + L - 1; ++p) idx[p] = nd_map(p - shift, n, mode);
  const std::vector<T> cvrow(static_cast<size_t>(inner), cval);
  const int64_t items = outer * n;
#pragma omp parallel num_threads(nt)
  {
    std::vector<const T*> rp(static_cast<size_t>(L));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t o = it / n, i = it % n;
      for (int64_t k = 0; k < L; ++k) {
        const int64_t s = idx[i + k];
        rp[k] = s < 0 ? cvrow.data() : x + (o * n + s) * inner;
      }
      corr1d_row<T, SYM>(rp.data(), w, L, inner, y + it * inner);
    }
  }
}

template <class T, int SYM>
void corr1d_any(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, const T* w,
                int64_t L, int64_t shift, int mode, T cval) {
  const double work = double(outer) * n * inner * L;
  const int nt = work < kMinParallelWork ? 1 : threads_for(outer * n, n * inner * L / std::max<int64_t>(n, 1));
  if (inner == 1)
    corr1d_lines<T, SYM>(x, y, outer, n, w, L, shift, mode, cval, nt);
  else
    corr1d_strided<T, SYM>(x, y, outer, n, inner, w, L, shift, mode, cval, nt);
}

// SciPy's uniform recurrence over `cols` independent lanes: row(p) points at the cols
// values of extended line position p, out(i) at where the means of output i go. Row
// pointers are resolved once per position so the lane loops vectorise.
template <class Row, class Out>
inline void uniform_lanes(int64_t n, int64_t size, int64_t cols, double* acc, Row row, Out out) {
  for (int64_t c = 0; c < cols; ++c) acc[c] = 0.0;
  for (int64_t k = 0; k < size; ++k) {
    const auto* r = row(k);
    for (int64_t c = 0; c < cols; ++c) acc[c] += static_cast<double>(r[c]);
  }
  const double sz = static_cast<double>(size);
  auto* o0 = out(0);
  using O = std::remove_pointer_t<decltype(o0)>;
  for (int64_t c = 0; c < cols; ++c) o0[c] = static_cast<O>(acc[c] / sz);
  for (int64_t i = 1; i < n; ++i) {
    const auto* in = row(i + size - 1);
    const auto* outg = row(i - 1);
    auto* o = out(i);
    for (int64_t c = 0; c < cols; ++c) {
      acc[c] += static_cast<double>(in[c]) - static_cast<double>(outg[c]);
      o[c] = static_cast<O>(acc[c] / sz);
    }
  }
}

}  // namespace

template <class T>
void ndi_correlate1d(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, const T* w,
                     int64_t L, int64_t shift, int sym, int mode, T cval) {
  if (outer == 0 || n == 0 || inner == 0) return;
  if (sym > 0 && (L & 1))
    corr1d_any<T, 1>(x, y, outer, n, inner, w, L, shift, mode, cval);
  else if (sym < 0 && (L & 1))
    corr1d_any<T, -1>(x, y, outer, n, inner, w, L, shift, mode, cval);
  else
    corr1d_any<T, 0>(x, y, outer, n, inner, w, L, shift, mode, cval);
}

template <class T>
void ndi_uniform1d(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, int64_t size,
                   int64_t shift, int mode, double cval) {
  if (outer == 0 || n == 0 || inner == 0) return;
  const int64_t len = n + size - 1;
  std::vector<int64_t> idx(static_cast<size_t>(len));
  for (int64_t p = 0; p < len; ++p) idx[p] = nd_map(p - shift, n, mode);
  const double work = double(outer) * n * inner * 4;
  if (inner == 1) {
    // The recurrence runs along the line, so lines are processed G at a time in the
    // lanes of a transposed buffer.
    constexpr int64_t G = 16;
    const int64_t groups = (outer + G - 1) / G;
    const int nt = work < kMinParallelWork ? 1 : threads_for(groups, n * G * 4);
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> tb(static_cast<size_t>(len * G)), ob(static_cast<size_t>(n * G));
      double acc[G];
#pragma omp for schedule(static)
      for (int64_t g0 = 0; g0 < groups; ++g0) {
        const int64_t o0 = g0 * G, cnt = std::min(G, outer - o0);
        for (int64_t g = 0; g < G; ++g) {
          if (g >= cnt) {
            for (int64_t p = 0; p < len; ++p) tb[p * G + g] = 0.0;
            continue;
          }
          const T* src = x + (o0 + g) * n;
          for (int64_t p = 0; p < len; ++p) {
            const int64_t s = idx[p];
            tb[p * G + g] = s < 0 ? cval : static_cast<double>(src[s]);
          }
        }
        const double* t = tb.data();
        double* ov = ob.data();
        uniform_lanes(
            n, size, G, acc, [t](int64_t p) { return t + p * G; },
            [ov](int64_t i) { return ov + i * G; });
        for (int64_t g = 0; g < cnt; ++g) {
          T* dst = y + (o0 + g) * n;
          for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(ob[i * G + g]);
        }
      }
    }
    return;
  }
  constexpr int64_t CB = 256;  // columns per work item: the accumulators stay in L1
  const int64_t cblocks = (inner + CB - 1) / CB;
  const int64_t items = outer * cblocks;
  const std::vector<T> cvrow(static_cast<size_t>(std::min(inner, CB)), static_cast<T>(cval));
  const int nt = work < kMinParallelWork ? 1 : threads_for(items, n * CB * 4);
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> acc(static_cast<size_t>(CB));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t o = it / cblocks, c0 = (it % cblocks) * CB;
      const int64_t cols = std::min(CB, inner - c0);
      const T* base = x + o * n * inner + c0;
      T* yb = y + o * n * inner + c0;
      const int64_t* ix = idx.data();
      const T* cv = cvrow.data();
      uniform_lanes(
          n, size, cols, acc.data(),
          [=](int64_t p) { return ix[p] < 0 ? cv : base + ix[p] * inner; },
          [=](int64_t i) { return yb + i * inner; });
    }
  }
}

template <class T>
void ndi_correlate2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, const T* w,
                     int64_t kh, int64_t kw, int64_t sh, int64_t sw, int mode, T cval) {
  if (B == 0 || H == 0 || W == 0) return;
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int VL = S::L;
  constexpr int NB = 4;
  constexpr int64_t chunk = NB * VL;
  // The non-zero taps in row-major order: SciPy's footprint and summation order.
  std::vector<int64_t> tap_off;
  std::vector<T> tap_w;
  std::vector<int64_t> tap_row;
  const int64_t Wstrip = (W + chunk - 1) / chunk * chunk + kw - 1;
  for (int64_t p = 0; p < kh; ++p)
    for (int64_t q = 0; q < kw; ++q)
      if (w[p * kw + q] != T(0)) {
        tap_row.push_back(p);
        tap_off.push_back(p * Wstrip + q);
        tap_w.push_back(w[p * kw + q]);
      }
  const int64_t ntaps = static_cast<int64_t>(tap_w.size());
  if (ntaps == 0) {
    std::fill(y, y + B * H * W, T(0));
    return;
  }
  const int64_t row_bytes = Wstrip * static_cast<int64_t>(sizeof(T));
  int64_t rb = std::max<int64_t>(1, (int64_t(256) << 10) / row_bytes - (kh - 1));
  const int nt_max = num_threads();
  const int64_t want = 4 * static_cast<int64_t>(nt_max);
  if (B * ((H + rb - 1) / rb) < want)
    rb = std::max<int64_t>(1, std::min(rb, (B * H + want - 1) / want));
  rb = std::max(std::min(rb, H), std::min<int64_t>(H, kh));
  const int64_t nblk = (H + rb - 1) / rb;
  const int64_t items = B * nblk;
  const double work = double(B) * H * W * ntaps;
  const int nt = work < kMinParallelWork ? 1 : threads_for(items, rb * W * ntaps);
  const int64_t* toff = tap_off.data();
  const T* tw = tap_w.data();
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> strip(static_cast<size_t>((rb + kh - 1) * Wstrip));
    T tail[chunk];
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / nblk, m0 = (it % nblk) * rb, m1 = std::min(H, m0 + rb);
      const T* img = x + b * H * W;
      for (int64_t r = 0; r < m1 - m0 + kh - 1; ++r) {
        T* dst = strip.data() + r * Wstrip;
        const int64_t sr = nd_map(m0 + r - sh, H, mode);
        if (sr < 0) {
          std::fill(dst, dst + W + kw - 1, cval);
          continue;
        }
        extend_line(img + sr * W, W, sw, W + kw - 1, mode, cval, dst);
      }
      for (int64_t m = m0; m < m1; ++m) {
        const T* rows = strip.data() + (m - m0) * Wstrip;
        T* out = y + (b * H + m) * W;
        for (int64_t j = 0; j < W; j += chunk) {
          V acc[NB];
          for (int v = 0; v < NB; ++v) acc[v] = V{} - V{};
          for (int64_t t = 0; t < ntaps; ++t) {
            const V wv = S::splat(tw[t]);
            const T* r = rows + toff[t] + j;
            for (int v = 0; v < NB; ++v) acc[v] = madd(acc[v], wv, S::load(r + v * VL));
          }
          if (j + chunk <= W) {
            for (int v = 0; v < NB; ++v) S::store(out + j + v * VL, acc[v]);
          } else {
            for (int v = 0; v < NB; ++v) S::store(tail + v * VL, acc[v]);
            std::memcpy(out + j, tail, (W - j) * sizeof(T));
          }
        }
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                  \
  template void ndi_correlate1d<T>(const T*, T*, int64_t, int64_t, int64_t, const T*,      \
                                   int64_t, int64_t, int, int, T);                         \
  template void ndi_uniform1d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                 int, double);                                             \
  template void ndi_correlate2d<T>(const T*, T*, int64_t, int64_t, int64_t, const T*,      \
                                   int64_t, int64_t, int64_t, int64_t, int, T);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)

}  // namespace FC_ISA
}  // namespace fc
