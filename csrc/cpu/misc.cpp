// ReLU, the fully connected layer (on our GEMM) and softmax cross-entropy.
#include "cpu/kernel_common.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fc {
namespace FC_ISA {

namespace {
// Elementwise work below this many elements per thread is not worth a parallel region.
constexpr int64_t kChunk = 1 << 15;

inline int elem_threads(int64_t n) { return threads_for((n + kChunk - 1) / kChunk, kChunk); }
// Note: on a combined "parallel for simd" a plain if() clause also switches off the simd
// part, so the clauses below say if(parallel: ...).
}  // namespace

template <class T>
void relu_fwd(int64_t n, const T* x, T* y) {
  const int nt = elem_threads(n);
  // !(v <= 0) keeps NaN (as torch.relu and np.maximum do) without a separate test.
#pragma omp parallel for simd schedule(simd : dynamic, kChunk / 4) num_threads(nt) if (parallel : nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = !(v <= T(0)) ? v : T(0);
  }
}

template <class T>
void relu_bwd(int64_t n, const T* gy, const T* y, T* gx) {
  const int nt = elem_threads(n);
#pragma omp parallel for simd schedule(simd : dynamic, kChunk / 4) num_threads(nt) if (parallel : nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gy[i];  // loaded unconditionally: a select, not a branch, on every ISA
    gx[i] = y[i] > T(0) ? g : T(0);
  }
}

template <class T>
void linear_fwd(int64_t M, int64_t K, int64_t N, const T* x, const T* w, const T* b, T* y) {
  if (M == 0 || N == 0) return;
  for (int64_t i = 0; i < M; ++i) {
    T* yr = y + i * N;
    if (b) std::copy(b, b + N, yr);
    else std::fill(yr, yr + N, T(0));
  }
  if (K == 0) return;  // an empty product: y is the bias
  gemm<T>(false, true, M, N, K, T(1), x, K, w, K, T(1), y, N, num_threads());
}

template <class T>
void linear_bwd(int64_t M, int64_t K, int64_t N, const T* gy, const T* x, const T* w, T* gx,
                T* gw, T* gb) {
  if (M == 0 || N == 0 || K == 0) {  // some product is empty: its result is zeros
    std::fill(gx, gx + M * K, T(0));
    std::fill(gw, gw + N * K, T(0));
    std::fill(gb, gb + N, T(0));
    if (M == 0 || N == 0) return;
  } else {
    gemm<T>(false, false, M, K, N, T(1), gy, N, w, K, T(0), gx, K, num_threads());
    gemm<T>(true, false, N, K, M, T(1), gy, N, x, K, T(0), gw, K, num_threads());
  }
  std::vector<double> acc(N, 0.0);
  for (int64_t i = 0; i < M; ++i) {
    const T* g = gy + i * N;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) acc[j] += static_cast<double>(g[j]);
  }
  for (int64_t j = 0; j < N; ++j) gb[j] = static_cast<T>(acc[j]);
}

namespace {
// A row's log-sum-exp kept as (shift, log(sum(exp(z - shift)))) in double. Log-softmax
// entries are then (z - shift) - lse_shifted: adding the shift back first would lose
// log 2 next to logits of 1e30 (1e30 + 0.69 == 1e30 in double).
struct RowLse {
  double shift, rest;
};
template <class T>
RowLse row_lse(const T* z, int64_t K) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < K; ++j) mx = std::max(mx, static_cast<double>(z[j]));
  if (std::isinf(mx)) return {mx, 0.0};  // all -inf (-> -inf) or some +inf (-> +inf)
  double s = 0;
  for (int64_t j = 0; j < K; ++j) s += std::exp(static_cast<double>(z[j]) - mx);
  return {mx, std::log(s)};
}
// log_softmax(z)[j] from the row's RowLse.
template <class T>
double log_softmax_at(const T* z, int64_t j, const RowLse& l) {
  return (static_cast<double>(z[j]) - l.shift) - l.rest;
}
}  // namespace

template <class T>
double cross_entropy_fwd(int64_t N, int64_t K, const T* z, const int64_t* t) {
  if (N == 0) return std::numeric_limits<double>::quiet_NaN();  // mean of nothing, as torch
  std::vector<double> loss(N);
  const int nt = threads_for(N, 8 * K);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < N; ++i) {
    const T* zr = z + i * K;
    loss[i] = -log_softmax_at(zr, t[i], row_lse(zr, K));
  }
  double s = 0;  // summed in row order: the result does not depend on the thread count
  for (int64_t i = 0; i < N; ++i) s += loss[i];
  return s / static_cast<double>(N);
}

template <class T>
void cross_entropy_bwd(int64_t N, int64_t K, const T* z, const int64_t* t, T* g) {
  const double inv_n = 1.0 / static_cast<double>(std::max<int64_t>(N, 1));
  const int nt = threads_for(N, 8 * K);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < N; ++i) {
    const T* zr = z + i * K;
    T* gr = g + i * K;
    const RowLse l = row_lse(zr, K);
    for (int64_t j = 0; j < K; ++j)
      gr[j] = static_cast<T>(std::exp(log_softmax_at(zr, j, l)) * inv_n);
    gr[t[i]] = static_cast<T>((std::exp(log_softmax_at(zr, t[i], l)) - 1.0) * inv_n);
  }
}

#define FC_INSTANTIATE(T)                                                                     \
  template void relu_fwd<T>(int64_t, const T*, T*);                                          \
  template void relu_bwd<T>(int64_t, const T*, const T*, T*);                                \
  template void linear_fwd<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*);  \
  template void linear_bwd<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*,   \
                              T*, T*);                                                       \
  template double cross_entropy_fwd<T>(int64_t, int64_t, const T*, const int64_t*);          \
  template void cross_entropy_bwd<T>(int64_t, int64_t, const T*, const int64_t*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
