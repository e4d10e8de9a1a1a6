// Batch normalisation, forward (training and inference) and backward, on (N, C, L).
//
// Statistics are gathered per (n, c) plane and then merged per channel, in a fixed
// order, so the results do not depend on the thread count. A plane's variance is
// computed two-pass about the plane's own mean (the second pass reads the plane from
// cache for the activation sizes CNNs use) and planes are merged with Chan's formula:
// no catastrophic cancellation when |mean| >> std, as the one-pass E[x^2] - E[x]^2 has.
#include "cpu/kernel_common.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {

template <class T>
inline void plane_mean_m2(const T* x, int64_t L, double& mean, double& m2) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < L; ++i) s += static_cast<double>(x[i]);
  mean = s / static_cast<double>(L);
  const double mu = mean;
  double q = 0;
#pragma omp simd reduction(+ : q)
  for (int64_t i = 0; i < L; ++i) {
    const double d = static_cast<double>(x[i]) - mu;
    q += d * d;
  }
  m2 = q;
}

// y = (x - mean) * scale + shift over one plane, in T (the plane is streamed once).
template <class T>
inline void affine_plane(const T* x, T* y, int64_t L, T mean, T scale, T shift) {
#pragma omp simd
  for (int64_t i = 0; i < L; ++i) y[i] = (x[i] - mean) * scale + shift;
}

inline int plane_threads(int64_t planes, int64_t L) { return threads_for(planes, 4 * L); }

// Planes are handed out dynamically in chunks of about 1/8 of a thread's share, so a
// thread descheduled by another process delays the rest by one chunk only. Per-plane
// results and the per-channel merges do not depend on which thread ran a plane.
inline int64_t dyn_chunk(int64_t items, int nt) {
  return std::max<int64_t>(1, items / (8 * static_cast<int64_t>(nt)));
}

}  // namespace

template <class T>
void batch_norm_train_fwd(int64_t N, int64_t C, int64_t L, const T* x, const T* w, const T* b,
                          double eps, T* y, T* mean, T* var) {
  const int64_t planes = N * C;
  if (C == 0) return;
  if (planes == 0 || L == 0) {  // no samples: statistics are undefined, as 0/0
    for (int64_t c = 0; c < C; ++c) mean[c] = var[c] = static_cast<T>(NAN);
    return;
  }
  std::vector<double> pm(planes), pq(planes), scale(C), cmean(C);
  const int nt = plane_threads(planes, L);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) plane_mean_m2(x + nc * L, L, pm[nc], pq[nc]);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      // Planes all hold L values, so Chan's merge reduces to: M2 = sum M2_n + L sum (m_n - m)^2.
      double mu = 0;
      for (int64_t n = 0; n < N; ++n) mu += pm[n * C + c];
      mu /= static_cast<double>(N);
      double m2 = 0, dev = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double d = pm[n * C + c] - mu;
        m2 += pq[n * C + c];
        dev += d * d;
      }
      const double v = (m2 + static_cast<double>(L) * dev) / static_cast<double>(N * L);
      mean[c] = static_cast<T>(mu);
      var[c] = static_cast<T>(v);
      cmean[c] = mu;
      scale[c] = (w ? static_cast<double>(w[c]) : 1.0) / std::sqrt(v + eps);
    }
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const int64_t c = nc % C;
      affine_plane(x + nc * L, y + nc * L, L, static_cast<T>(cmean[c]),
                   static_cast<T>(scale[c]), b ? b[c] : T(0));
    }
  }
}

template <class T>
void batch_norm_eval_fwd(int64_t N, int64_t C, int64_t L, const T* x, const T* mean,
                         const T* var, const T* w, const T* b, double eps, T* y) {
  const int64_t planes = N * C;
  std::vector<T> scale(C);
  for (int64_t c = 0; c < C; ++c)
    scale[c] = static_cast<T>((w ? static_cast<double>(w[c]) : 1.0) /
                              std::sqrt(static_cast<double>(var[c]) + eps));
  const int nt = plane_threads(planes, L);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel for schedule(dynamic, ch) num_threads(nt) if (nt > 1)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const int64_t c = nc % C;
    affine_plane(x + nc * L, y + nc * L, L, mean[c], scale[c], b ? b[c] : T(0));
  }
}

template <class T>
void batch_norm_bwd(int64_t N, int64_t C, int64_t L, const T* gy, const T* x, const T* w,
                    const T* mean, const T* invstd, bool training, T* gx, T* gw, T* gb) {
  const int64_t planes = N * C;
  std::vector<double> psum(planes), pdot(planes), k(C), a(C), bc(C);
  const double m = static_cast<double>(N * L);
  const int nt = plane_threads(planes, L);
  const int64_t ch = dyn_chunk(planes, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T* g = gy + nc * L;
      const T* xp = x + nc * L;
      const double mu = static_cast<double>(mean[nc % C]);
      double s = 0, d = 0;
#pragma omp simd reduction(+ : s, d)
      for (int64_t i = 0; i < L; ++i) {
        const double gv = static_cast<double>(g[i]);
        s += gv;
        d += gv * (static_cast<double>(xp[i]) - mu);
      }
      psum[nc] = s;
      pdot[nc] = d;
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, d = 0;
      for (int64_t n = 0; n < N; ++n) {
        s += psum[n * C + c];
        d += pdot[n * C + c];
      }
      const double is = static_cast<double>(invstd[c]);
      gb[c] = static_cast<T>(s);
      gw[c] = static_cast<T>(d * is);
      k[c] = (w ? static_cast<double>(w[c]) : 1.0) * is;
      // gx = k * (gy - gb/m - (x - mean) * invstd * gw/m)
      a[c] = training && m > 0 ? s / m : 0.0;
      bc[c] = training && m > 0 ? d * is * is / m : 0.0;
    }
#pragma omp for schedule(dynamic, ch)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const int64_t c = nc % C;
      const T* g = gy + nc * L;
      const T* xp = x + nc * L;
      T* o = gx + nc * L;
      const T kk = static_cast<T>(k[c]), mu = mean[c];
      if (training) {
        const T aa = static_cast<T>(a[c]), bb = static_cast<T>(bc[c]);
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) o[i] = kk * (g[i] - aa - (xp[i] - mu) * bb);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) o[i] = kk * g[i];
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                     \
  template void batch_norm_train_fwd<T>(int64_t, int64_t, int64_t, const T*, const T*,       \
                                        const T*, double, T*, T*, T*);                       \
  template void batch_norm_eval_fwd<T>(int64_t, int64_t, int64_t, const T*, const T*,        \
                                       const T*, const T*, const T*, double, T*);            \
  template void batch_norm_bwd<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*,   \
                                  const T*, const T*, bool, T*, T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
