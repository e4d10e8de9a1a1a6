// Row-major GEMM. Plain cache-friendly loop order (i, p, j); the packed, register-
// blocked version replaces this body.
#include "cpu/kernel_common.h"

#include <algorithm>

namespace fc {
namespace FC_ISA {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc, int nthreads) {
  const int nt = std::max(1, std::min<int>(nthreads, static_cast<int>(std::max<int64_t>(M, 1))));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));
    else if (beta != T(1)) for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    for (int64_t p = 0; p < K; ++p) {
      const T a = alpha * (trans_a ? A[p * lda + i] : A[i * lda + p]);
      if (!trans_b) {
        const T* b = B + p * ldb;
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] += a * B[j * ldb + p];
      }
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t, int);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t, int);

}  // namespace FC_ISA
}  // namespace fc
