// Bindings for our GEMM (csrc/cpu/gemm/), exposed for tests and benchmarks.
#include "bind/arrays.h"
#include "common/parallel.h"
#include "cpu/kernels.h"

namespace fc::bind {

template <class T>
static void def_gemm(nb::module_& m, const char* name) {
  m.def(
      name,
      [](In<T, 2> a, In<T, 2> b, Out<T, 2> c, bool trans_a, bool trans_b, T alpha, T beta) {
        const int64_t M = trans_a ? a.shape(1) : a.shape(0);
        const int64_t K = trans_a ? a.shape(0) : a.shape(1);
        const int64_t Kb = trans_b ? b.shape(1) : b.shape(0);
        const int64_t N = trans_b ? b.shape(0) : b.shape(1);
        require(K == Kb, "gemm: inner dimensions differ: " + shape_str(a) + " x " + shape_str(b));
        require(static_cast<int64_t>(c.shape(0)) == M && static_cast<int64_t>(c.shape(1)) == N,
                "gemm: c has shape " + shape_str(c) + ", expected (" + std::to_string(M) + ", " +
                    std::to_string(N) + ")");
        FC_DISPATCH(gemm<T>(trans_a, trans_b, M, N, K, alpha, a.data(), a.shape(1), b.data(),
                            b.shape(1), beta, c.data(), N, num_threads()));
      },
      nb::arg("a").noconvert(), nb::arg("b").noconvert(), nb::arg("c").noconvert(), nb::arg("trans_a") = false,
      nb::arg("trans_b") = false, nb::arg("alpha") = T(1), nb::arg("beta") = T(0), GIL(),
      "c = alpha * op(a) @ op(b) + beta * c, in place, row-major.");
}

void bind_gemm(nb::module_& m) {
  def_gemm<float>(m, "sgemm");
  def_gemm<double>(m, "dgemm");
}

}  // namespace fc::bind
