// Direct 2-D correlation with SciPy's boundary modes (fastconv.signal.correlate2d).
//
// Each thread takes a block of output rows of one image, copies the rows of the
// boundary-extended image those outputs read into a private strip (so the boundary is
// handled once per pixel, not once per tap, and the extra memory is bounded by
// threads x strip), then sweeps the kernel over the strip with register-blocked
// vectors. The vectors are GCC vector extensions sized per ISA build, so the same code
// becomes AVX-512, AVX2 or SSE2.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {


constexpr double kMinParallelMacs = double(1 << 23);
constexpr int64_t kMinParallelCopy = int64_t(1) << 20;  // elements, for the padding copy

template <class T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
};

// Source index of extended coordinate i along an axis of length n; -1 reads `fill`.
// Wrap and symm are periodic (period n and 2n), so kernels larger than the image keep
// wrapping / mirroring the way np.pad and SciPy >= 1.x do.
inline int64_t map_index(int64_t i, int64_t n, int boundary) {
  if (i >= 0 && i < n) return i;
  if (boundary == 0 || n == 0) return -1;
  if (boundary == 1) {
    const int64_t r = i % n;
    return r < 0 ? r + n : r;
  }
  const int64_t p = 2 * n;
  int64_t r = i % p;
  if (r < 0) r += p;
  return r < n ? r : p - 1 - r;
}

// Column plan of one extended row: [0, lo) and [hi, len) go through cmap, [lo, hi) is a
// straight copy of source columns lo + ow ...
struct ColPlan {
  std::vector<int64_t> cmap;
  int64_t lo = 0, hi = 0, ow = 0;
  ColPlan(int64_t len, int64_t W, int64_t ow_, int boundary) : cmap(len), ow(ow_) {
    for (int64_t c = 0; c < len; ++c) cmap[c] = map_index(c + ow, W, boundary);
    lo = std::min(std::max<int64_t>(-ow, 0), len);
    hi = std::min(std::max<int64_t>(W - ow, lo), len);
  }
};

template <class T>
inline void extend_row(const T* img, int64_t H, int64_t W, int64_t rs, int64_t r,
                       const ColPlan& cp, int64_t len, int boundary, T fill, T* dst) {
  const int64_t sr = map_index(r, H, boundary);
  if (sr < 0) {
    std::fill(dst, dst + len, fill);
    return;
  }
  const T* src = img + sr * rs;
  for (int64_t c = 0; c < cp.lo; ++c) dst[c] = cp.cmap[c] < 0 ? fill : src[cp.cmap[c]];
  if (cp.hi > cp.lo) std::memcpy(dst + cp.lo, src + cp.lo + cp.ow, (cp.hi - cp.lo) * sizeof(T));
  for (int64_t c = cp.hi; c < len; ++c) dst[c] = cp.cmap[c] < 0 ? fill : src[cp.cmap[c]];
}

template <class V, class T>
inline V loadu(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

// One output row: out[n] = sum_{i,j} rows[i][n + j] * w[i, j] for n < Wo. Rows are
// readable up to Wo rounded up to the chunk plus kw - 1, so full-width vector loads
// never leave the strip; only the stores of the last chunk are trimmed.
template <class T, int NV>
inline void corr_row(const T* rows, int64_t stride, const T* w, int64_t kh, int64_t kw,
                     T* out, int64_t Wo) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = kVecBytes / sizeof(T);
  constexpr int64_t chunk = NV * L;
  for (int64_t n0 = 0; n0 < Wo; n0 += chunk) {
    V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = V{} ;
    for (int64_t i = 0; i < kh; ++i) {
      const T* r = rows + i * stride + n0;
      const T* wr = w + i * kw;
      for (int64_t j = 0; j < kw; ++j) {
        const V wv = V{} + wr[j];
        for (int v = 0; v < NV; ++v) acc[v] += wv * loadu<V>(r + j + v * L);
      }
    }
    if (n0 + chunk <= Wo) {
      for (int v = 0; v < NV; ++v) std::memcpy(out + n0 + v * L, &acc[v], sizeof(V));
    } else {
      T tmp[chunk];
      for (int v = 0; v < NV; ++v) std::memcpy(tmp + v * L, &acc[v], sizeof(V));
      std::memcpy(out + n0, tmp, (Wo - n0) * sizeof(T));
    }
  }
}

// Two output rows at once: input row q of the strip feeds output row m through kernel
// row q and row m + 1 through kernel row q - 1, so each loaded vector serves two
// multiply-adds (the single-row loop is bound by loads, not FMAs). Each output's terms
// are added in the same order as corr_row's, so the results are identical.
template <class T, int NV>
inline void corr_row2(const T* rows, int64_t stride, const T* w, int64_t kh, int64_t kw,
                      T* out0, T* out1, int64_t Wo) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = kVecBytes / sizeof(T);
  constexpr int64_t chunk = NV * L;
  for (int64_t n0 = 0; n0 < Wo; n0 += chunk) {
    V a0[NV], a1[NV];
    for (int v = 0; v < NV; ++v) a0[v] = a1[v] = V{};
    for (int64_t q = 0; q <= kh; ++q) {
      const T* r = rows + q * stride + n0;
      if (q == 0 || q == kh) {
        const T* wr = w + (q == 0 ? 0 : kh - 1) * kw;
        V* acc = q == 0 ? a0 : a1;
        for (int64_t j = 0; j < kw; ++j) {
          const V wv = V{} + wr[j];
          for (int v = 0; v < NV; ++v) acc[v] += wv * loadu<V>(r + j + v * L);
        }
        continue;
      }
      const T* w0 = w + q * kw;
      const T* w1 = w0 - kw;
      for (int64_t j = 0; j < kw; ++j) {
        const V wv0 = V{} + w0[j], wv1 = V{} + w1[j];
        for (int v = 0; v < NV; ++v) {
          const V xv = loadu<V>(r + j + v * L);
          a0[v] += wv0 * xv;
          a1[v] += wv1 * xv;
        }
      }
    }
    if (n0 + chunk <= Wo) {
      for (int v = 0; v < NV; ++v) {
        std::memcpy(out0 + n0 + v * L, &a0[v], sizeof(V));
        std::memcpy(out1 + n0 + v * L, &a1[v], sizeof(V));
      }
    } else {
      T tmp[chunk];
      for (int v = 0; v < NV; ++v) std::memcpy(tmp + v * L, &a0[v], sizeof(V));
      std::memcpy(out0 + n0, tmp, (Wo - n0) * sizeof(T));
      for (int v = 0; v < NV; ++v) std::memcpy(tmp + v * L, &a1[v], sizeof(V));
      std::memcpy(out1 + n0, tmp, (Wo - n0) * sizeof(T));
    }
  }
}

}  // namespace

template <class T>
void signal_corr2d(const T* x, int64_t B, int64_t H, int64_t W, int64_t sb, int64_t sr,
                   const T* w, int64_t kh, int64_t kw, T* y, int64_t Ho, int64_t Wo,
                   int64_t oh, int64_t ow, int boundary, T fill) {
  if (B == 0 || Ho == 0 || Wo == 0) return;
  if (kh == 0 || kw == 0) {  // an empty sum
    std::fill(y, y + B * Ho * Wo, T(0));
    return;
  }
  // Narrow images waste most of a wide chunk, so the register block shrinks with Wo.
  constexpr int64_t L = kVecBytes / sizeof(T);
  const int NV = Wo > 2 * L ? 4 : 1;
  const int64_t chunk = NV * L;
  const int64_t Wext = Wo + kw - 1;                        // columns the outputs read
  const int64_t Wstrip = (Wo + chunk - 1) / chunk * chunk + kw - 1;  // plus load slack
  const ColPlan cp(Wext, W, ow, boundary);

  // Row blocks: a strip of about 256 KiB (L2-resident while the kernel sweeps it), but
  // enough blocks that every thread gets several.
  const int64_t row_bytes = Wstrip * static_cast<int64_t>(sizeof(T));
  int64_t rb = std::max<int64_t>(1, (int64_t(256) << 10) / row_bytes - (kh - 1));
  const int nt_max = num_threads();
  const int64_t want_blocks = 4 * static_cast<int64_t>(nt_max);
  if (B * ((Ho + rb - 1) / rb) < want_blocks)
    rb = std::max<int64_t>(1, std::min(rb, (B * Ho + want_blocks - 1) / want_blocks));
  rb = std::min(rb, Ho);
  // Taller blocks amortise the kh - 1 extra rows each strip copies.
  rb = std::max(rb, std::min<int64_t>(Ho, kh));
  const int64_t nblk = (Ho + rb - 1) / rb;
  const int64_t items = B * nblk;
  // Waking the workers costs microseconds on idle cores but a whole scheduler time slice
  // on busy ones (measured: 0.12 ms single-threaded vs 20+ ms with two threads for a
  // 512x512 3x3 correlation on an oversubscribed 2-core machine). Below ~8M
  // multiply-adds (~0.3 ms on one AVX2 core) one thread is the safe choice.
  const double macs = static_cast<double>(B) * Ho * Wo * kh * kw;
  const int nt = macs < kMinParallelMacs ? 1 : threads_for(items, rb * Wo * kh * kw);

#pragma omp parallel num_threads(nt)
  {
    // Value-initialised: the slack columns stay zero, never stale NaNs or denormals.
    std::vector<T> strip(static_cast<size_t>((rb + kh - 1) * Wstrip));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / nblk, m0 = (it % nblk) * rb, m1 = std::min(Ho, m0 + rb);
      const T* img = x + b * sb;
      const int64_t nrows = m1 - m0 + kh - 1;
      for (int64_t r = 0; r < nrows; ++r)
        extend_row(img, H, W, sr, m0 + oh + r, cp, Wext, boundary, fill,
                   strip.data() + r * Wstrip);
      T* yb = y + (b * Ho + m0) * Wo;
      int64_t m = 0;
      if (kh > 1 && NV == 4)
        for (; m + 1 < m1 - m0; m += 2)
          corr_row2<T, 4>(strip.data() + m * Wstrip, Wstrip, w, kh, kw, yb + m * Wo,
                          yb + (m + 1) * Wo, Wo);
      for (; m < m1 - m0; ++m) {
        const T* rows = strip.data() + m * Wstrip;
        if (NV == 4)
          corr_row<T, 4>(rows, Wstrip, w, kh, kw, yb + m * Wo, Wo);
        else
          corr_row<T, 1>(rows, Wstrip, w, kh, kw, yb + m * Wo, Wo);
      }
    }
  }
}

template <class T>
void signal_extend2d(const T* x, int64_t B, int64_t H, int64_t W, T* xp, int64_t Hp,
                     int64_t Wp, int64_t oh, int64_t ow, int boundary, T fill) {
  if (B == 0 || Hp == 0 || Wp == 0) return;
  const ColPlan cp(Wp, W, ow, boundary);
  const int64_t items = B * Hp;
  const int nt = B * Hp * Wp < kMinParallelCopy ? 1 : threads_for(items, Wp);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / Hp, r = it % Hp;
    extend_row(x + b * H * W, H, W, W, r + oh, cp, Wp, boundary, fill, xp + it * Wp);
  }
}

#define FC_INSTANTIATE(T)                                                                 \
  template void signal_corr2d<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t,  \
                                 const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, \
                                 int64_t, int, T);                                         \
  template void signal_extend2d<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t,      \
                                   int64_t, int64_t, int64_t, int, T);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
FC_INSTANTIATE(uint64_t)

}  // namespace FC_ISA
}  // namespace fc
