// Bindings for the direct convolution (csrc/cpu/conv_direct.cpp).
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

template <class T>
static int64_t direct_packed_size(const ConvShape& s) {
  FC_DISPATCH(conv_direct_packed_size<T>(s));
}

template <class T>
static void def_direct(nb::module_& m) {
  m.def(
      "conv_direct_fwd",
      [](In<T, 4> x, In<T, 4> w, OptIn<T, 1> bias, Out<T, 4> y, Pair stride, Pair pad, Pair dil,
         int64_t groups, OptIn<T, 4> residual, double lo, double hi) {
        const ConvShape s = conv_shape(x, w, y, stride, pad, dil, groups);
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        FC_DISPATCH(conv_direct_fwd<T>(s, x.data(), w.data(), ep, y.data()));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("bias").none().noconvert(), nb::arg("y").noconvert(), nb::arg("stride"),
      nb::arg("padding"), nb::arg("dilation"), nb::arg("groups"),
      nb::arg("residual").noconvert().none() = nb::none(), nb::arg("lo") = -kInf,
      nb::arg("hi") = kInf, GIL());
  m.def(
      "conv_direct_packed_size",
      [](In<T, 4> x, In<T, 4> w, Out<T, 4> y, Pair stride, Pair pad, Pair dil, int64_t groups) {
        const ConvShape s = conv_shape(x, w, y, stride, pad, dil, groups);
        return direct_packed_size<T>(s);
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("y").noconvert(),
      nb::arg("stride"), nb::arg("padding"), nb::arg("dilation"), nb::arg("groups"),
      "Elements of conv_direct_pack's output for this layer on the active ISA (0: none).");
  m.def(
      "conv_direct_pack",
      [](In<T, 4> x, In<T, 4> w, Out<T, 4> y, Pair stride, Pair pad, Pair dil, int64_t groups,
         Out<T, 1> packed) {
        const ConvShape s = conv_shape(x, w, y, stride, pad, dil, groups);
        const int64_t need = direct_packed_size<T>(s);
        require(need > 0, "conv_direct_pack: this layer has no prepacked direct form");
        require(int64_t(packed.shape(0)) == need,
                "conv_direct_pack: packed must have conv_direct_packed_size elements");
        FC_DISPATCH(conv_direct_pack<T>(s, w.data(), packed.data()));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("y").noconvert(),
      nb::arg("stride"), nb::arg("padding"), nb::arg("dilation"), nb::arg("groups"),
      nb::arg("packed").noconvert(), GIL());
  m.def(
      "conv_direct_fwd_packed",
      [](In<T, 4> x, In<T, 4> w, In<T, 1> packed, OptIn<T, 1> bias, Out<T, 4> y, Pair stride,
         Pair pad, Pair dil, int64_t groups, OptIn<T, 4> residual, double lo, double hi) {
        const ConvShape s = conv_shape(x, w, y, stride, pad, dil, groups);
        const int64_t need = direct_packed_size<T>(s);
        require(need > 0 && int64_t(packed.shape(0)) == need,
                "packed must come from conv_direct_pack for this layer");
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        FC_DISPATCH(conv_direct_fwd_packed<T>(s, x.data(), w.data(), packed.data(), ep, y.data()));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("packed").noconvert(),
      nb::arg("bias").none().noconvert(), nb::arg("y").noconvert(), nb::arg("stride"),
      nb::arg("padding"), nb::arg("dilation"), nb::arg("groups"),
      nb::arg("residual").noconvert().none() = nb::none(), nb::arg("lo") = -kInf,
      nb::arg("hi") = kInf, GIL());
  m.def(
      "conv_direct_bwd_data",
      [](In<T, 4> gy, In<T, 4> w, Out<T, 4> gx, Pair stride, Pair pad, Pair dil, int64_t groups) {
        const ConvShape s = conv_shape(gx, w, gy, stride, pad, dil, groups);
        FC_DISPATCH(conv_direct_bwd_data<T>(s, gy.data(), w.data(), gx.data()));
      },
      nb::arg("grad_out").noconvert(), nb::arg("w").noconvert(), nb::arg("grad_x").noconvert(), nb::arg("stride"), nb::arg("padding"),
      nb::arg("dilation"), nb::arg("groups"), GIL());
  m.def(
      "conv_direct_bwd_weight",
      [](In<T, 4> gy, In<T, 4> x, Out<T, 4> gw, Pair stride, Pair pad, Pair dil, int64_t groups) {
        const ConvShape s = conv_shape(x, gw, gy, stride, pad, dil, groups);
        FC_DISPATCH(conv_direct_bwd_weight<T>(s, gy.data(), x.data(), gw.data()));
      },
      nb::arg("grad_out").noconvert(), nb::arg("x").noconvert(), nb::arg("grad_w").noconvert(), nb::arg("stride"), nb::arg("padding"),
      nb::arg("dilation"), nb::arg("groups"), GIL());
}

void bind_conv_direct(nb::module_& m) {
  def_direct<float>(m);
  def_direct<double>(m);
}

}  // namespace fc::bind
