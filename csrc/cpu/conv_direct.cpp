// Direct convolution: the plain seven-loop algorithm, forward, backward-data and
// backward-weight, any stride / padding / dilation / groups.
#include "cpu/kernel_common.h"

#include <algorithm>

namespace fc {
namespace FC_ISA {

namespace {
// First and one-past-last output index o with 0 <= o*stride - pad + r*dil < extent.
inline void valid_range(int64_t extent, int64_t out, int64_t stride, int64_t pad, int64_t off,
                        int64_t& lo, int64_t& hi) {
  // o*stride >= pad - off  and  o*stride <= extent - 1 + pad - off
  const int64_t a = pad - off;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  const int64_t b = extent - 1 + pad - off;
  hi = b < 0 ? 0 : std::min(out, b / stride + 1);
  if (lo > hi) lo = hi;
}
}  // namespace

template <class T>
void conv_direct_fwd(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), HW = s.H * s.W, PQ = s.P * s.Q;
  const int64_t items = s.N * s.K;
#pragma omp parallel for schedule(static) num_threads(threads_for(items, PQ * Cg * s.R * s.S))
  for (int64_t nk = 0; nk < items; ++nk) {
    const int64_t n = nk / s.K, k = nk % s.K, g = k / Kg;
    T* yp = y + nk * PQ;
    const T b = bias ? bias[k] : T(0);
    for (int64_t i = 0; i < PQ; ++i) yp[i] = b;
    for (int64_t c = 0; c < Cg; ++c) {
      const T* xp = x + (n * s.C + g * Cg + c) * HW;
      const T* wp = w + (k * Cg + c) * s.R * s.S;
      for (int64_t r = 0; r < s.R; ++r) {
        int64_t p0, p1;
        valid_range(s.H, s.P, s.sh, s.ph, r * s.dh, p0, p1);
        for (int64_t t = 0; t < s.S; ++t) {
          int64_t q0, q1;
          valid_range(s.W, s.Q, s.sw, s.pw, t * s.dw, q0, q1);
          const T wv = wp[r * s.S + t];
          for (int64_t p = p0; p < p1; ++p) {
            const T* xr = xp + (p * s.sh - s.ph + r * s.dh) * s.W - s.pw + t * s.dw;
            T* yr = yp + p * s.Q;
            for (int64_t q = q0; q < q1; ++q) yr[q] += wv * xr[q * s.sw];
          }
        }
      }
    }
  }
}

template <class T>
void conv_direct_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), HW = s.H * s.W, PQ = s.P * s.Q;
  const int64_t items = s.N * s.C;
#pragma omp parallel for schedule(static) num_threads(threads_for(items, PQ * Kg * s.R * s.S))
  for (int64_t nc = 0; nc < items; ++nc) {
    const int64_t n = nc / s.C, c = nc % s.C, g = c / Cg, cg = c % Cg;
    T* gxp = gx + nc * HW;
    for (int64_t i = 0; i < HW; ++i) gxp[i] = T(0);
    for (int64_t kk = 0; kk < Kg; ++kk) {
      const int64_t k = g * Kg + kk;
      const T* gyp = gy + (n * s.K + k) * PQ;
      const T* wp = w + (k * Cg + cg) * s.R * s.S;
      for (int64_t r = 0; r < s.R; ++r) {
        int64_t p0, p1;
        valid_range(s.H, s.P, s.sh, s.ph, r * s.dh, p0, p1);
        for (int64_t t = 0; t < s.S; ++t) {
          int64_t q0, q1;
          valid_range(s.W, s.Q, s.sw, s.pw, t * s.dw, q0, q1);
          const T wv = wp[r * s.S + t];
          for (int64_t p = p0; p < p1; ++p) {
            T* xr = gxp + (p * s.sh - s.ph + r * s.dh) * s.W - s.pw + t * s.dw;
            const T* yr = gyp + p * s.Q;
            for (int64_t q = q0; q < q1; ++q) xr[q * s.sw] += wv * yr[q];
          }
        }
      }
    }
  }
}

template <class T>
void conv_direct_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), HW = s.H * s.W, PQ = s.P * s.Q;
  const int64_t items = s.K * Cg;
#pragma omp parallel for schedule(static) num_threads(threads_for(items, s.N * PQ * s.R * s.S))
  for (int64_t kc = 0; kc < items; ++kc) {
    const int64_t k = kc / Cg, cg = kc % Cg, g = k / Kg;
    T* gwp = gw + kc * s.R * s.S;
    for (int64_t r = 0; r < s.R; ++r) {
      int64_t p0, p1;
      valid_range(s.H, s.P, s.sh, s.ph, r * s.dh, p0, p1);
      for (int64_t t = 0; t < s.S; ++t) {
        int64_t q0, q1;
        valid_range(s.W, s.Q, s.sw, s.pw, t * s.dw, q0, q1);
        T acc = T(0);
        for (int64_t n = 0; n < s.N; ++n) {
          const T* xp = x + (n * s.C + g * Cg + cg) * HW;
          const T* gyp = gy + (n * s.K + k) * PQ;
          for (int64_t p = p0; p < p1; ++p) {
            const T* xr = xp + (p * s.sh - s.ph + r * s.dh) * s.W - s.pw + t * s.dw;
            const T* yr = gyp + p * s.Q;
            for (int64_t q = q0; q < q1; ++q) acc += yr[q] * xr[q * s.sw];
          }
        }
        gwp[r * s.S + t] = acc;
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                  \
  template void conv_direct_fwd<T>(const ConvShape&, const T*, const T*, const T*, T*);   \
  template void conv_direct_bwd_data<T>(const ConvShape&, const T*, const T*, T*);        \
  template void conv_direct_bwd_weight<T>(const ConvShape&, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
