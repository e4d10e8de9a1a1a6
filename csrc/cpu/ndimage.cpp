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

// ------------------------------------------------------------------ fused separable 2-D
// Two 1-D passes over each plane x[b] (H x W), one along H and one along W, in SciPy's
// order, without a full-size temporary: each thread walks a block of output rows, the
// intermediate rows live in a per-thread row buffer (H pass first) or a ring of the
// L + 1 most recent intermediate rows (W pass first), both small enough for L2. Every
// pass does the arithmetic its unfused kernel does (same order, intermediate rounded to
// T), so float64 stays SciPy's bits.

// A float vector as doubles (T = float: half a vector of floats widened).
template <class T>
inline typename Simd<double>::V load_as_double(const T* p) {
  using VD = typename Simd<double>::V;
  if constexpr (std::is_same_v<T, double>) {
    return Simd<double>::load(p);
  } else {
    typedef float VF __attribute__((vector_size(sizeof(VD) / 2)));
    VF v;
    std::memcpy(&v, p, sizeof(VF));
    return __builtin_convertvector(v, VD);
  }
}

template <class T>
inline void store_from_double(T* p, typename Simd<double>::V v) {
  using VD = typename Simd<double>::V;
  if constexpr (std::is_same_v<T, double>) {
    Simd<double>::store(p, v);
  } else {
    typedef float VF __attribute__((vector_size(sizeof(VD) / 2)));
    const VF f = __builtin_convertvector(v, VF);
    std::memcpy(p, &f, sizeof(VF));
  }
}

// The mean of a running sum (vectors or plain doubles): float64 divides as SciPy does (its
// bits); float32, which rounds the double result to float anyway, multiplies by the
// reciprocal.
template <class T, class V>
inline V box_mean(V acc, V sz, V inv) {
  if constexpr (std::is_same_v<T, double>) {
    (void)inv;
    return acc / sz;
  } else {
    (void)sz;
    return acc * inv;
  }
}

// b[0 .. len): b[shift .. shift + n) already holds the line; fill both sides by `mode`.
template <class T>
inline void extend_inplace(T* b, int64_t n, int64_t shift, int64_t len, int mode, T cval) {
  for (int64_t p = 0; p < shift; ++p) {
    const int64_t s = nd_map(p - shift, n, mode);
    b[p] = s < 0 ? cval : b[shift + s];
  }
  for (int64_t p = shift + n; p < len; ++p) {
    const int64_t s = nd_map(p - shift, n, mode);
    b[p] = s < 0 ? cval : b[shift + s];
  }
}

template <class T, int SYM>
inline void corr_ext_row(const T* b, const T* w, int64_t L, int64_t W, T* out, T* tail) {
  constexpr int NB = 4;
  constexpr int64_t chunk = NB * Simd<T>::L;
  int64_t j = 0;
  for (; j + chunk <= W; j += chunk) corr1d_block<T, NB, SYM>(b + j, w, L, out + j);
  if (j < W) {
    corr1d_block<T, NB, SYM>(b + j, w, L, tail);
    std::memcpy(out + j, tail, (W - j) * sizeof(T));
  }
}

// SciPy's running mean along one extended line b (W + size - 1 values) in double.
// float64: SciPy's recurrence, bit for bit. float32: each mean as a direct double sum of
// its window (vectorised; the result rounds to SciPy's float but for rare ties) up to
// 32 taps, the recurrence beyond.
template <class T>
inline void box_ext_row(const T* b, int64_t W, int64_t size, double* db, T* out) {
  using SD = Simd<double>;
  using VD = typename SD::V;
  constexpr int VL = SD::L;
  const double sz = static_cast<double>(size), inv = 1.0 / sz;
  if (std::is_same_v<T, float> && size <= 32) {
    const int64_t len = W + size - 1;
    int64_t p = 0;
    for (; p + VL <= len; p += VL) SD::store(db + p, load_as_double(b + p));
    for (; p < len; ++p) db[p] = static_cast<double>(b[p]);
    const VD vs = SD::splat(sz), vi = SD::splat(inv);
    int64_t j = 0;
    for (; j + 2 * VL <= W; j += 2 * VL) {
      VD a0 = SD::load(db + j), a1 = SD::load(db + j + VL);
      for (int64_t k = 1; k < size; ++k) {
        a0 += SD::load(db + j + k);
        a1 += SD::load(db + j + k + VL);
      }
      store_from_double(out + j, box_mean<T>(a0, vs, vi));
      store_from_double(out + j + VL, box_mean<T>(a1, vs, vi));
    }
    for (; j < W; ++j) {
      double a = db[j];
      for (int64_t k = 1; k < size; ++k) a += db[j + k];
      out[j] = static_cast<T>(a * inv);
    }
    return;
  }
  double acc = 0.0;
  for (int64_t k = 0; k < size; ++k) acc += static_cast<double>(b[k]);
  out[0] = static_cast<T>(box_mean<T>(acc, sz, inv));
  for (int64_t i = 1; i < W; ++i) {
    acc += static_cast<double>(b[i + size - 1]) - static_cast<double>(b[i - 1]);
    out[i] = static_cast<T>(box_mean<T>(acc, sz, inv));
  }
}

// SciPy's running mean down the rows: start (rows rp[0 .. size)) or step (add row `in`,
// drop row `gone`), over W lanes of double accumulators.
template <class T>
inline void box_rows_start(const T* const* rp, int64_t size, int64_t W, double* acc, T* out) {
  using SD = Simd<double>;
  using VD = typename SD::V;
  constexpr int VL = SD::L;
  const double sz = static_cast<double>(size), inv = 1.0 / sz;
  const VD vs = SD::splat(sz), vi = SD::splat(inv);
  int64_t c = 0;
  for (; c + VL <= W; c += VL) {
    VD a = SD::splat(0.0);
    for (int64_t k = 0; k < size; ++k) a += load_as_double(rp[k] + c);
    SD::store(acc + c, a);
    store_from_double(out + c, box_mean<T>(a, vs, vi));
  }
  for (; c < W; ++c) {
    double a = 0.0;
    for (int64_t k = 0; k < size; ++k) a += static_cast<double>(rp[k][c]);
    acc[c] = a;
    out[c] = static_cast<T>(box_mean<T>(a, sz, inv));
  }
}

template <class T>
inline void box_rows_step(const T* in, const T* gone, int64_t size, int64_t W, double* acc,
                          T* out) {
  using SD = Simd<double>;
  using VD = typename SD::V;
  constexpr int VL = SD::L;
  const double sz = static_cast<double>(size), inv = 1.0 / sz;
  const VD vs = SD::splat(sz), vi = SD::splat(inv);
  int64_t c = 0;
  for (; c + VL <= W; c += VL) {
    const VD a = SD::load(acc + c) + (load_as_double(in + c) - load_as_double(gone + c));
    SD::store(acc + c, a);
    store_from_double(out + c, box_mean<T>(a, vs, vi));
  }
  for (; c < W; ++c) {
    acc[c] += static_cast<double>(in[c]) - static_cast<double>(gone[c]);
    out[c] = static_cast<T>(box_mean<T>(acc[c], sz, inv));
  }
}

template <class T>
struct SepPass {
  const T* w;     // correlation weights (kind 0)
  int64_t L;      // taps (kind 0) or window size (kind 1)
  int64_t shift;  // L // 2 + origin, in [0, L)
  int sym;        // kind 0: 1 symmetric, -1 antisymmetric (odd L), 0 general
  int mode;
  int kind;       // 0 correlation, 1 uniform (running mean)
};

// The W pass of one row: b is the extended line (W + L - 1 values).
template <class T>
inline void sep_wpass(const SepPass<T>& p, const T* b, int64_t W, T* out, T* tail,
                      double* db) {
  if (p.kind == 1) return box_ext_row(b, W, p.L, db, out);
  if (p.sym > 0 && (p.L & 1)) return corr_ext_row<T, 1>(b, p.w, p.L, W, out, tail);
  if (p.sym < 0 && (p.L & 1)) return corr_ext_row<T, -1>(b, p.w, p.L, W, out, tail);
  corr_ext_row<T, 0>(b, p.w, p.L, W, out, tail);
}

// The H pass of output row i: rp[k] is ext row i + k (k < L); for the running mean, rp[-1]
// (row i - 1) must be valid when i is not the first row of the block.
template <class T>
inline void sep_hpass(const SepPass<T>& p, const T* const* rp, bool first, int64_t W,
                      double* acc, T* out) {
  if (p.kind == 1) {
    if (first)
      box_rows_start(rp, p.L, W, acc, out);
    else
      box_rows_step(rp[p.L - 1], rp[-1], p.L, W, acc, out);
    return;
  }
  if (p.sym > 0 && (p.L & 1)) return corr1d_row<T, 1>(rp, p.w, p.L, W, out);
  if (p.sym < 0 && (p.L & 1)) return corr1d_row<T, -1>(rp, p.w, p.L, W, out);
  corr1d_row<T, 0>(rp, p.w, p.L, W, out);
}

// Below this many multiply-adds the fused passes run on one thread: their per-thread
// start-up is a few row buffers, so the break-even is well below kMinParallelWork.
constexpr double kMinParallelSep = double(1 << 20);

}  // namespace

template <class T>
void ndi_separable2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, const T* wh,
                     int64_t Lh, int64_t shh, int symh, int modeh, int kindh, const T* ww,
                     int64_t Lw, int64_t shw, int symw, int modew, int kindw, int h_first,
                     T cval) {
  if (B == 0 || H == 0 || W == 0) return;
  const SepPass<T> ph{wh, Lh, shh, symh, modeh, kindh}, pw{ww, Lw, shw, symw, modew, kindw};
  constexpr int64_t chunk = 4 * Simd<T>::L;
  const int64_t Wr = (W + chunk - 1) / chunk * chunk;
  const int64_t blen = Wr + Lw - 1 + chunk;  // extended line plus the tail block's overrun
  std::vector<int64_t> idx(static_cast<size_t>(H + Lh - 1));
  for (int64_t p = 0; p < H + Lh - 1; ++p) idx[p] = nd_map(p - shh, H, modeh);
  const std::vector<T> cvrow(static_cast<size_t>(W), cval);
  // Blocks of output rows: enough for every thread, each long enough that the ring's
  // start-up (Lh - 1 extra W-pass rows) stays small.
  const int nt_max = num_threads();
  const int64_t min_rows = std::max<int64_t>(16, 4 * Lh);
  // SciPy's float64 running mean down the rows carries one sum from row 0, so a block
  // that starts lower replays the sums from row 0 (H pass first) or, when the intermediate
  // rows would have to be recomputed for that, the plane is one block. float32 restarts
  // the sum at each block (as exact, within float32 rounding of SciPy's result).
  const bool replay = std::is_same_v<T, double> && kindh == 1;
  // Eight blocks per thread, handed out dynamically: on a shared machine a thread that is
  // descheduled mid-call then holds up one small block, not half the image.
  int64_t nblk = std::max<int64_t>(1, std::min<int64_t>((H + min_rows - 1) / min_rows,
                                                          (8 * nt_max + B - 1) / B));
  if (replay) nblk = h_first ? std::min<int64_t>(nblk, nt_max) : 1;
  const int64_t rb = (H + nblk - 1) / nblk;
  nblk = (H + rb - 1) / rb;
  const int64_t items = B * nblk;
  const double work = double(B) * H * W * double(Lh + Lw);
  const int nt = work < kMinParallelSep ? 1 : static_cast<int>(std::min<int64_t>(nt_max, items));
  const int64_t R = Lh + 1;  // ring slots: rows i - 1 .. i + Lh - 1
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> b(static_cast<size_t>(blen), T(0)), tail(static_cast<size_t>(chunk));
    std::vector<double> db(static_cast<size_t>(blen), 0.0), acc(static_cast<size_t>(W));
    std::vector<T> ring;
    if (!h_first) ring.assign(static_cast<size_t>(R * W), T(0));
    std::vector<const T*> rpv(static_cast<size_t>(Lh + 1));
    const T** rp = rpv.data() + 1;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bi = it / nblk, m0 = (it % nblk) * rb, m1 = std::min(H, m0 + rb);
      const T* img = x + bi * H * W;
      T* dst = y + bi * H * W;
      if (h_first) {
        const int64_t start = replay ? 0 : m0;
        for (int64_t i = start; i < m1; ++i) {
          for (int64_t k = -1; k < Lh; ++k) {
            if (i + k < 0) continue;
            const int64_t s = idx[i + k];
            rp[k] = s < 0 ? cvrow.data() : img + s * W;
          }
          sep_hpass(ph, rp, i == start, W, acc.data(), b.data() + shw);
          if (i < m0) continue;  // replayed sum only
          extend_inplace(b.data(), W, shw, W + Lw - 1, modew, cval);
          sep_wpass(pw, b.data(), W, dst + i * W, tail.data(), db.data());
        }
      } else {
        auto produce = [&](int64_t p) {
          T* slot = ring.data() + (p % R) * W;
          const int64_t s = idx[p];
          if (s < 0) {
            std::fill(slot, slot + W, cval);
            return;
          }
          extend_line(img + s * W, W, shw, W + Lw - 1, modew, cval, b.data());
          sep_wpass(pw, b.data(), W, slot, tail.data(), db.data());
        };
        for (int64_t p = m0; p + 1 < m0 + Lh; ++p) produce(p);
        for (int64_t i = m0; i < m1; ++i) {
          produce(i + Lh - 1);
          for (int64_t k = (i > m0 ? -1 : 0); k < Lh; ++k)
            rp[k] = ring.data() + ((i + k) % R) * W;
          sep_hpass(ph, rp, i == m0, W, acc.data(), dst + i * W);
        }
      }
    }
  }
}

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
  const bool dense = ntaps == kh * kw;
  if (ntaps == 0) {
    std::fill(y, y + B * H * W, T(0));
    return;
  }
  const int64_t row_bytes = Wstrip * static_cast<int64_t>(sizeof(T));
  int64_t rb = std::max<int64_t>(1, (int64_t(256) << 10) / row_bytes - (kh - 1));
  const int nt_max = num_threads();
  const int64_t want = 8 * static_cast<int64_t>(nt_max);  // blocks handed out dynamically
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
#pragma omp for schedule(dynamic, 1)
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
      int64_t m = m0;
      // Dense weights: two output rows at a time, each input vector loaded once for both
      // (taps (u, q) of the upper row and (u - 1, q) of the lower one). That doubles the
      // independent accumulators (the FMA latency, not the loads, bounds one row) and
      // keeps every output's taps in row-major order.
      if (dense) {
        for (; m + 1 < m1; m += 2) {
          const T* rows = strip.data() + (m - m0) * Wstrip;
          T* out0 = y + (b * H + m) * W;
          T* out1 = out0 + W;
          for (int64_t j = 0; j < W; j += chunk) {
            V a0[NB], a1[NB];
            for (int v = 0; v < NB; ++v) a0[v] = a1[v] = V{} - V{};
            for (int64_t u = 0; u <= kh; ++u) {
              const T* r = rows + u * Wstrip + j;
              const T* w0 = w + u * kw;
              const T* w1 = w0 - kw;
              if (u == 0) {
                for (int64_t q = 0; q < kw; ++q) {
                  const V wv = S::splat(w0[q]);
                  for (int v = 0; v < NB; ++v) a0[v] = madd(a0[v], wv, S::load(r + q + v * VL));
                }
                continue;
              }
              if (u == kh) {
                for (int64_t q = 0; q < kw; ++q) {
                  const V wv = S::splat(w1[q]);
                  for (int v = 0; v < NB; ++v) a1[v] = madd(a1[v], wv, S::load(r + q + v * VL));
                }
                continue;
              }
              for (int64_t q = 0; q < kw; ++q) {
                const V wv0 = S::splat(w0[q]), wv1 = S::splat(w1[q]);
                for (int v = 0; v < NB; ++v) {
                  const V xv = S::load(r + q + v * VL);
                  a0[v] = madd(a0[v], wv0, xv);
                  a1[v] = madd(a1[v], wv1, xv);
                }
              }
            }
            if (j + chunk <= W) {
              for (int v = 0; v < NB; ++v) {
                S::store(out0 + j + v * VL, a0[v]);
                S::store(out1 + j + v * VL, a1[v]);
              }
            } else {
              for (int v = 0; v < NB; ++v) S::store(tail + v * VL, a0[v]);
              std::memcpy(out0 + j, tail, (W - j) * sizeof(T));
              for (int v = 0; v < NB; ++v) S::store(tail + v * VL, a1[v]);
              std::memcpy(out1 + j, tail, (W - j) * sizeof(T));
            }
          }
        }
      }
      for (; m < m1; ++m) {
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
                                   int64_t, int64_t, int64_t, int64_t, int, T);      \
  template void ndi_separable2d<T>(const T*, T*, int64_t, int64_t, int64_t, const T*,      \
                                   int64_t, int64_t, int, int, int, const T*, int64_t,     \
                                   int64_t, int, int, int, int, T);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)

}  // namespace FC_ISA
}  // namespace fc
