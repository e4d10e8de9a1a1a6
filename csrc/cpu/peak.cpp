// FMA-chain peak: independent vector fused multiply-add chains, as many as cover the FMA
// latency times the FMA units (4-5 cycles x 2 units on current x86 cores: 10 chains
// needed, 12 used), so the loop is throughput-bound, not latency-bound. The chains are
// explicit FMA intrinsics on AVX2 / AVX-512; the generic copy has no FMA instruction
// (x86-64 baseline), so it runs separate multiplies and adds, which is its peak.
// Each chain is a = a * m + c with m just below 1, so the values stay finite and normal
// (no denormal slow path) for any iteration count, and the checksum consumes them all.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <omp.h>
#include <time.h>

namespace fc {
namespace FC_ISA {

namespace {
constexpr int kFmaChains = 12;

template <class T>
using V = typename Simd<T>::V;

template <class T>
inline V<T> fma_v(V<T> a, V<T> m, V<T> c) {
#if defined(FC_ISA_avx512)
  if constexpr (sizeof(T) == 4)
    return reinterpret_cast<V<T>>(_mm512_fmadd_ps(reinterpret_cast<__m512>(a),
                                                  reinterpret_cast<__m512>(m),
                                                  reinterpret_cast<__m512>(c)));
  else
    return reinterpret_cast<V<T>>(_mm512_fmadd_pd(reinterpret_cast<__m512d>(a),
                                                  reinterpret_cast<__m512d>(m),
                                                  reinterpret_cast<__m512d>(c)));
#elif defined(FC_ISA_avx2)
  if constexpr (sizeof(T) == 4)
    return reinterpret_cast<V<T>>(_mm256_fmadd_ps(reinterpret_cast<__m256>(a),
                                                  reinterpret_cast<__m256>(m),
                                                  reinterpret_cast<__m256>(c)));
  else
    return reinterpret_cast<V<T>>(_mm256_fmadd_pd(reinterpret_cast<__m256d>(a),
                                                  reinterpret_cast<__m256d>(m),
                                                  reinterpret_cast<__m256d>(c)));
#else
  return a * m + c;
#endif
}

template <class T>
double chains_one_thread(int64_t iters, int seed) {
  const V<T> m = Simd<T>::splat(T(0.999999));
  const V<T> c = Simd<T>::splat(T(1e-3));
  V<T> a0 = Simd<T>::splat(T(seed + 1)), a1 = a0 + c, a2 = a1 + c, a3 = a2 + c;
  V<T> a4 = a3 + c, a5 = a4 + c, a6 = a5 + c, a7 = a6 + c;
  V<T> a8 = a7 + c, a9 = a8 + c, a10 = a9 + c, a11 = a10 + c;
  for (int64_t i = 0; i < iters; ++i) {
    a0 = fma_v<T>(a0, m, c); a1 = fma_v<T>(a1, m, c); a2 = fma_v<T>(a2, m, c);
    a3 = fma_v<T>(a3, m, c); a4 = fma_v<T>(a4, m, c); a5 = fma_v<T>(a5, m, c);
    a6 = fma_v<T>(a6, m, c); a7 = fma_v<T>(a7, m, c); a8 = fma_v<T>(a8, m, c);
    a9 = fma_v<T>(a9, m, c); a10 = fma_v<T>(a10, m, c); a11 = fma_v<T>(a11, m, c);
  }
  const V<T> s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
  double sum = 0;
  for (int l = 0; l < Simd<T>::L; ++l) sum += static_cast<double>(s[l]);
  return sum;
}
}  // namespace

template <class T>
int64_t fma_chain_flops() {
  return int64_t{2} * kFmaChains * Simd<T>::L;
}

// Each thread times itself in its own CPU time: on a shared machine wall time would also
// count the moments another process held the core, which says nothing about the FMA
// units. (Two threads on SMT siblings of one core share its FMA units and each measures
// the shared rate, so the sum stays honest.)
template <class T>
double fma_chains(int64_t iters, int threads, double* thread_seconds) {
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int t = omp_get_thread_num();
    timespec t0{}, t1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    total += chains_one_thread<T>(iters, t);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    if (t < threads)
      thread_seconds[t] = static_cast<double>(t1.tv_sec - t0.tv_sec) + 1e-9 * static_cast<double>(t1.tv_nsec - t0.tv_nsec);
  }
  return total;
}

template double fma_chains<float>(int64_t, int, double*);
template double fma_chains<double>(int64_t, int, double*);
template int64_t fma_chain_flops<float>();
template int64_t fma_chain_flops<double>();

}  // namespace FC_ISA
}  // namespace fc
