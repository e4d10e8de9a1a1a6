// Bindings for the pointwise 1x1 convolution (csrc/cpu/conv_pointwise.cpp): the filter
// prepack that fastconv.compile keeps, and the forward that takes it. (The per-call path
// is conv_direct_fwd / _bwd_data / _bwd_weight, which hand 1x1 layers to this kernel.)
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

// A ConvShape for a 1x1, padding-0 layer from its filter shape alone (for the pack).
static ConvShape pointwise_shape(int64_t K, int64_t C, int64_t groups) {
  require(groups >= 1 && K >= 0 && C >= 0 && K % groups == 0 && C % groups == 0,
          "groups must be >= 1 and divide the channel and filter counts");
  ConvShape s{};
  s.N = 1; s.C = C; s.H = s.W = 1; s.K = K; s.R = s.S = 1; s.P = s.Q = 1;
  s.sh = s.sw = s.dh = s.dw = 1; s.groups = groups;
  return s;
}

template <class T>
static void def_pointwise(nb::module_& m) {
  m.def(
      "conv_pointwise_pack",
      [](In<T, 4> w, Out<T, 1> packed, int64_t groups) {
        require(w.shape(2) == 1 && w.shape(3) == 1, "conv_pointwise_pack: w must be K x C/groups x 1 x 1");
        const ConvShape s = pointwise_shape(w.shape(0), int64_t(w.shape(1)) * groups, groups);
        require(int64_t(packed.shape(0)) == fc::generic::conv_pointwise_packed_size(s),
                "conv_pointwise_pack: packed must have conv_pointwise_packed_size elements");
        FC_DISPATCH(conv_pointwise_pack<T>(s, w.data(), packed.data()));
      },
      nb::arg("w").noconvert(), nb::arg("packed").noconvert(), nb::arg("groups"), GIL());
  m.def(
      "conv_pointwise_fwd",
      [](In<T, 4> x, In<T, 4> w, OptIn<T, 1> packed, OptIn<T, 1> bias, Out<T, 4> y, Pair stride,
         int64_t groups, OptIn<T, 4> residual, double lo, double hi) {
        const ConvShape s = conv_shape(x, w, y, stride, Pair{0, 0}, Pair{1, 1}, groups);
        require(s.R == 1 && s.S == 1 && fc::generic::pointwise_serves(s),
                "conv_pointwise_fwd serves 1x1 filters, padding 0, with P, Q inside the input");
        require(!packed || int64_t(packed->shape(0)) == fc::generic::conv_pointwise_packed_size(s),
                "packed must come from conv_pointwise_pack for this weight and groups");
        const Epilogue<T> ep = make_epilogue(s, bias, residual, y, lo, hi);
        FC_DISPATCH(conv_pointwise_fwd<T>(s, x.data(), w.data(), opt_data(packed), ep, y.data()));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("packed").none().noconvert(),
      nb::arg("bias").none().noconvert(), nb::arg("y").noconvert(), nb::arg("stride"),
      nb::arg("groups"), nb::arg("residual").noconvert().none() = nb::none(),
      nb::arg("lo") = -kInf, nb::arg("hi") = kInf, GIL());
}

void bind_conv_pointwise(nb::module_& m) {
  m.def(
      "conv_pointwise_packed_size",
      [](int64_t K, int64_t C, int64_t groups) {
        return fc::generic::conv_pointwise_packed_size(pointwise_shape(K, C, groups));
      },
      nb::arg("K"), nb::arg("C"), nb::arg("groups"),
      "Elements of conv_pointwise_pack's output for K filters over C input channels.");
  def_pointwise<float>(m);
  def_pointwise<double>(m);
}

}  // namespace fc::bind
