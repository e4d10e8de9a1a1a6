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
         OptIn<T, 4> residual, double lo, double hi, OptIn<T, 1> packed) {
        check_winograd(mt, w.shape(2), w.shape(3));
        const ConvShape s = conv_shape(x, w, y, {1, 1}, pad, {1, 1}, 1);
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        const int mi = static_cast<int>(mt);
        if (packed) {
          const int64_t want = generic::conv_winograd_packed_len(s.K, s.C, mi);
          require(static_cast<int64_t>(packed->shape(0)) == want,
                  "winograd: packed must hold " + std::to_string(want) +
                      " values (conv_winograd_pack of these filters and m), got " +
                      std::to_string(packed->shape(0)));
          const T* U = packed->data();
          FC_DISPATCH(conv_winograd_fwd_packed<T>(s, mi, x.data(), w.data(), U, ep, y.data()));
        }
        FC_DISPATCH(conv_winograd_fwd<T>(s, mi, x.data(), w.data(), ep, y.data()));
      },
      nb::arg("x"), nb::arg("w"), nb::arg("bias").none(), nb::arg("y"), nb::arg("padding"),
      nb::arg("m"), nb::arg("residual").noconvert().none() = nb::none(), nb::arg("lo") = -kInf,
      nb::arg("hi") = kInf, nb::arg("packed").noconvert().none() = nb::none(), GIL(),
      "y = conv2d(x, w, bias, padding) by Winograd F(m x m, 3 x 3); 3x3, stride 1 only.\n"
      "packed: the filters as conv_winograd_pack transformed them (inference).");
  m.def(
      "conv_winograd_pack",
      [](In<T, 4> w, int64_t mt, Out<T, 1> packed) {
        check_winograd(mt, w.shape(2), w.shape(3));
        const int mi = static_cast<int>(mt);
        const int64_t K = w.shape(0), C = w.shape(1);
        const int64_t want = generic::conv_winograd_packed_len(K, C, mi);
        require(static_cast<int64_t>(packed.shape(0)) == want,
                "winograd: packed must hold " + std::to_string(want) + " values, got " +
                    std::to_string(packed.shape(0)));
        FC_DISPATCH(conv_winograd_pack<T>(K, C, mi, w.data(), packed.data()));
      },
      nb::arg("w"), nb::arg("m"), nb::arg("packed"), GIL(),
      "Writes the Winograd-transformed filters of w (K, C, 3, 3) for F(m x m, 3 x 3) into "
      "packed (conv_winograd_packed_len(K, C, m) values).");
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
  m.def(
      "conv_winograd_packed_len",
      [](int64_t K, int64_t C, int64_t mt) {
        require(mt == 2 || mt == 4, "winograd: m must be 2 or 4, got " + std::to_string(mt));
        require(K >= 0 && C >= 0, "winograd: K and C must be >= 0");
        return generic::conv_winograd_packed_len(K, C, static_cast<int>(mt));
      },
      nb::arg("K"), nb::arg("C"), nb::arg("m"),
      "Number of values conv_winograd_pack writes for K x C 3x3 filters and F(m x m, 3 x 3).");
  def_winograd<float>(m);
  def_winograd<double>(m);
}

}  // namespace fc::bind
