// Bindings for the Winograd F(m x m, 3 x 3) kernels (csrc/cpu/conv_winograd.cpp).
// Only 3x3 / stride 1 / dilation 1 / groups 1 is served; the bottom / right padding
// is implied by the output size, so 'same'-style asymmetric padding works as is.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {
void check_winograd(int64_t m, int64_t R, int64_t S) {
  require(m == 2 || m == 4, "winograd: m must be 2 or 4, got " + std::to_string(m));
  require(R == 3 && S == 3, "winograd: only 3x3 kernels are supported, got " +
                                std::to_string(R) + "x" + std::to_string(S));
}
}  // namespace

template <class T>
static void def_winograd(nb::module_& m) {
  m.def(
      "conv_winograd_fwd",
      [](In<T, 4> x, In<T, 4> w, OptIn<T, 1> bias, Out<T, 4> y, Pair pad, int64_t mt,
         OptIn<T, 4> residual, double lo, double hi) {
        check_winograd(mt, w.shape(2), w.shape(3));
        const ConvShape s = conv_shape(x, w, y, {1, 1}, pad, {1, 1}, 1);
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        FC_DISPATCH(conv_winograd_fwd<T>(s, static_cast<int>(mt), x.data(), w.data(), ep,
                                         y.data()));
      },
      nb::arg("x"), nb::arg("w"), nb::arg("bias").none(), nb::arg("y"), nb::arg("padding"),
      nb::arg("m"), nb::arg("residual").noconvert().none() = nb::none(), nb::arg("lo") = -kInf,
      nb::arg("hi") = kInf, GIL(),
      "y = conv2d(x, w, bias, padding) by Winograd F(m x m, 3 x 3); 3x3, stride 1 only.");
  m.def(
      "conv_winograd_bwd_data",
      [](In<T, 4> gy, In<T, 4> w, Out<T, 4> gx, Pair pad, int64_t mt) {
        check_winograd(mt, w.shape(2), w.shape(3));
        const ConvShape s = conv_shape(gx, w, gy, {1, 1}, pad, {1, 1}, 1);
        FC_DISPATCH(conv_winograd_bwd_data<T>(s, static_cast<int>(mt), gy.data(), w.data(),
                                              gx.data()));
      },
      nb::arg("grad_out"), nb::arg("w"), nb::arg("grad_x"), nb::arg("padding"), nb::arg("m"),
      GIL(), "grad_x of conv2d (3x3, stride 1) by Winograd F(m x m, 3 x 3).");
}

void bind_conv_winograd(nb::module_& m) {
  def_winograd<float>(m);
  def_winograd<double>(m);
}

}  // namespace fc::bind
