// Bindings for ReLU, linear and cross-entropy (csrc/cpu/misc.cpp). Elementwise ops take
// flattened 1-D arrays (any shape reshapes to that for free when C-contiguous).
#include "bind/arrays.h"
#include "common/parallel.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {

template <class T>
void def_misc(nb::module_& m) {
  m.def(
      "relu_fwd",
      [](In<T, 1> x, Out<T, 1> y) {
        require(x.shape(0) == y.shape(0), "relu_fwd: y " + shape_str(y) + " must match x " +
                                              shape_str(x));
        FC_DISPATCH(relu_fwd<T>(static_cast<int64_t>(x.shape(0)), x.data(), y.data()));
      },
      nb::arg("x"), nb::arg("y"), GIL(), "y = max(x, 0) (NaN propagates).");
  m.def(
      "relu_inplace",
      [](Out<T, 1> x) {
        FC_DISPATCH(relu_fwd<T>(static_cast<int64_t>(x.shape(0)), x.data(), x.data()));
      },
      nb::arg("x"), GIL(), "x = max(x, 0) in place.");
  m.def(
      "relu_bwd",
      [](In<T, 1> gy, In<T, 1> y, Out<T, 1> gx) {
        require(gy.shape(0) == y.shape(0) && gx.shape(0) == y.shape(0),
                "relu_bwd: grad_out, y and grad_x must have the same length");
        FC_DISPATCH(relu_bwd<T>(static_cast<int64_t>(y.shape(0)), gy.data(), y.data(),
                                gx.data()));
      },
      nb::arg("grad_out"), nb::arg("y"), nb::arg("grad_x"), GIL(),
      "grad_x = grad_out where y > 0, else 0.");
  m.def(
      "linear_fwd",
      [](In<T, 2> x, In<T, 2> w, OptIn<T, 1> b, Out<T, 2> y) {
        const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
        require(static_cast<int64_t>(w.shape(1)) == K,
                "linear_fwd: weight " + shape_str(w) + " does not match x " + shape_str(x));
        require(!b || static_cast<int64_t>(b->shape(0)) == N,
                "linear_fwd: bias must have " + std::to_string(N) + " elements");
        require(static_cast<int64_t>(y.shape(0)) == M && static_cast<int64_t>(y.shape(1)) == N,
                "linear_fwd: y has shape " + shape_str(y) + ", expected (" + std::to_string(M) +
                    ", " + std::to_string(N) + ")");
        FC_DISPATCH(linear_fwd<T>(M, K, N, x.data(), w.data(), opt_data(b), y.data()));
      },
      nb::arg("x"), nb::arg("w"), nb::arg("bias").none(), nb::arg("y"), GIL(),
      "y = x @ w.T + bias.");
  m.def(
      "linear_bwd",
      [](In<T, 2> gy, In<T, 2> x, In<T, 2> w, Out<T, 2> gx, Out<T, 2> gw, Out<T, 1> gb) {
        const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
        require(static_cast<int64_t>(w.shape(1)) == K,
                "linear_bwd: weight " + shape_str(w) + " does not match x " + shape_str(x));
        require(static_cast<int64_t>(gy.shape(0)) == M && static_cast<int64_t>(gy.shape(1)) == N,
                "linear_bwd: grad_out has shape " + shape_str(gy));
        require(gx.shape(0) == x.shape(0) && gx.shape(1) == x.shape(1),
                "linear_bwd: grad_x must have x's shape");
        require(gw.shape(0) == w.shape(0) && gw.shape(1) == w.shape(1),
                "linear_bwd: grad_w must have w's shape");
        require(static_cast<int64_t>(gb.shape(0)) == N, "linear_bwd: grad_b must have N elements");
        FC_DISPATCH(linear_bwd<T>(M, K, N, gy.data(), x.data(), w.data(), gx.data(), gw.data(),
                                  gb.data()));
      },
      nb::arg("grad_out"), nb::arg("x"), nb::arg("w"), nb::arg("grad_x"), nb::arg("grad_w"),
      nb::arg("grad_b"), GIL(), "Gradients of linear_fwd.");
  m.def(
      "cross_entropy_fwd",
      [](In<T, 2> z, In<int64_t, 1> t) -> double {
        const int64_t N = z.shape(0), K = z.shape(1);
        require(static_cast<int64_t>(t.shape(0)) == N, "cross_entropy_fwd: target must have " +
                                                           std::to_string(N) + " elements");
        for (int64_t i = 0; i < N; ++i)
          require(t.data()[i] >= 0 && t.data()[i] < K,
                  "cross_entropy_fwd: target values must lie in [0, " + std::to_string(K) + ")");
        FC_DISPATCH(cross_entropy_fwd<T>(N, K, z.data(), t.data()));
      },
      nb::arg("logits"), nb::arg("target"), GIL(), "Mean softmax cross-entropy.");
  m.def(
      "cross_entropy_bwd",
      [](In<T, 2> z, In<int64_t, 1> t, Out<T, 2> g) {
        const int64_t N = z.shape(0), K = z.shape(1);
        require(static_cast<int64_t>(t.shape(0)) == N, "cross_entropy_bwd: target must have " +
                                                           std::to_string(N) + " elements");
        require(g.shape(0) == z.shape(0) && g.shape(1) == z.shape(1),
                "cross_entropy_bwd: grad must have the logits' shape");
        for (int64_t i = 0; i < N; ++i)
          require(t.data()[i] >= 0 && t.data()[i] < K,
                  "cross_entropy_bwd: target values must lie in [0, " + std::to_string(K) + ")");
        FC_DISPATCH(cross_entropy_bwd<T>(N, K, z.data(), t.data(), g.data()));
      },
      nb::arg("logits"), nb::arg("target"), nb::arg("grad"), GIL(),
      "Gradient of the mean cross-entropy with respect to the logits.");
}

}  // namespace

void bind_misc(nb::module_& m) {
  def_misc<float>(m);
  def_misc<double>(m);
}

}  // namespace fc::bind
