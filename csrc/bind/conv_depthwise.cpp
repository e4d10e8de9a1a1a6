// Bindings for the depthwise convolution (csrc/cpu/conv_depthwise.cpp): groups == C and
// K a multiple of C, checked here as well since the kernel relies on it.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

static void require_depthwise(const ConvShape& s) {
  require(s.groups == s.C && s.K % s.C == 0,
          "depthwise convolution needs groups == C and K a multiple of C");
  // The kernel buffers each input row split into sw column phases: bound that by the
  // dispatcher's limit (fastconv.backends.native.conv.DEPTHWISE_MAX_STRIDE).
  require(s.sw <= 64, "depthwise: stride " + std::to_string(s.sw) +
                          " is above the kernel's limit of 64 column phases");
}

template <class T>
static void def_depthwise(nb::module_& m) {
  m.def(
      "conv_depthwise_fwd",
      [](In<T, 4> x, In<T, 4> w, OptIn<T, 1> bias, Out<T, 4> y, Pair stride, Pair pad, Pair dil,
         int64_t groups, OptIn<T, 4> residual, double lo, double hi) {
        const ConvShape s = conv_shape(x, w, y, stride, pad, dil, groups);
        require_depthwise(s);
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        FC_DISPATCH(conv_depthwise_fwd<T>(s, x.data(), w.data(), ep, y.data()));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("bias").none().noconvert(), nb::arg("y").noconvert(), nb::arg("stride"),
      nb::arg("padding"), nb::arg("dilation"), nb::arg("groups"),
      nb::arg("residual").noconvert().none() = nb::none(), nb::arg("lo") = -kInf,
      nb::arg("hi") = kInf, GIL());
  m.def(
      "conv_depthwise_bwd_data",
      [](In<T, 4> gy, In<T, 4> w, Out<T, 4> gx, Pair stride, Pair pad, Pair dil, int64_t groups) {
        const ConvShape s = conv_shape(gx, w, gy, stride, pad, dil, groups);
        require_depthwise(s);
        FC_DISPATCH(conv_depthwise_bwd_data<T>(s, gy.data(), w.data(), gx.data()));
      },
      nb::arg("grad_out").noconvert(), nb::arg("w").noconvert(), nb::arg("grad_x").noconvert(), nb::arg("stride"), nb::arg("padding"),
      nb::arg("dilation"), nb::arg("groups"), GIL());
  m.def(
      "conv_depthwise_bwd_weight",
      [](In<T, 4> gy, In<T, 4> x, Out<T, 4> gw, Pair stride, Pair pad, Pair dil, int64_t groups) {
        const ConvShape s = conv_shape(x, gw, gy, stride, pad, dil, groups);
        require_depthwise(s);
        FC_DISPATCH(conv_depthwise_bwd_weight<T>(s, gy.data(), x.data(), gw.data()));
      },
      nb::arg("grad_out").noconvert(), nb::arg("x").noconvert(), nb::arg("grad_w").noconvert(), nb::arg("stride"), nb::arg("padding"),
      nb::arg("dilation"), nb::arg("groups"), GIL());
}

void bind_conv_depthwise(nb::module_& m) {
  def_depthwise<float>(m);
  def_depthwise<double>(m);
}

}  // namespace fc::bind
