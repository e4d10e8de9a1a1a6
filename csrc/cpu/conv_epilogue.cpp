// The convolution output stage as a separate pass over y (common/epilogue.h): the
// residual add and the activation clamp for kernels whose stores do not fuse them yet.
// One read-modify-write of y, split over (image, channel) planes.
#include "cpu/kernel_common.h"

namespace fc {
namespace FC_ISA {

template <class T>
void conv_epilogue_post(const ConvShape& s, const Epilogue<T>& ep, T* y) {
  const int64_t planes = s.N * s.K, PQ = s.P * s.Q;
  const T* res = ep.residual;
  const T lo = ep.lo, hi = ep.hi;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, 2 * PQ))
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* yp = y + pl * PQ;
    if (res) {
      const T* rp = res + pl * PQ;
#pragma omp simd
      for (int64_t i = 0; i < PQ; ++i) {
        T v = yp[i] + rp[i];
        v = v < lo ? lo : v;
        yp[i] = v > hi ? hi : v;
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < PQ; ++i) {
        T v = yp[i];
        v = v < lo ? lo : v;
        yp[i] = v > hi ? hi : v;
      }
    }
  }
}

template void conv_epilogue_post<float>(const ConvShape&, const Epilogue<float>&, float*);
template void conv_epilogue_post<double>(const ConvShape&, const Epilogue<double>&, double*);

}  // namespace FC_ISA
}  // namespace fc
