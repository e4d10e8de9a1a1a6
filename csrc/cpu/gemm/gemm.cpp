// Row-major GEMM on the packed, register-blocked driver in gemm_driver.h.
#include "cpu/kernel_common.h"
#include "cpu/gemm/gemm_driver.h"

namespace fc {
namespace FC_ISA {

template <class T>
void gemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
               const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
               const T* bias, int nthreads) {
  using namespace gemm_detail;
  run<T>(M, N, K, alpha, StridedPackA<T>{A, lda, trans_a}, StridedPackB<T>{B, ldb, trans_b},
         beta, C, ldc, ColIdentity{}, bias, nthreads);
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc, int nthreads) {
  gemm_bias<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr,
               nthreads);
}

#define FC_INSTANTIATE(T)                                                                     \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t, int);                                        \
  template void gemm_bias<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,      \
                             const T*, int64_t, T, T*, int64_t, const T*, int);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
