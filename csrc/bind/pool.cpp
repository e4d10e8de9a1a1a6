// Bindings for the pooling kernels (csrc/cpu/pool.cpp). Geometry is re-checked here so a
// direct call with bad arguments raises ValueError; the kernels clip every window to the
// input, so any geometry that passes is memory-safe.
#include <limits>

#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {

constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();  // rows are int32 inside

template <class X, class Y>
PoolShape pool_shape(const char* op, const X& x, const Y& y, Pair kernel, Pair stride, Pair pad,
                     Pair dil, bool windows = true) {
  PoolShape s{};
  s.N = x.shape(0); s.C = x.shape(1); s.H = x.shape(2); s.W = x.shape(3);
  s.P = y.shape(2); s.Q = y.shape(3);
  s.kh = kernel.first; s.kw = kernel.second;
  s.sh = stride.first; s.sw = stride.second;
  s.ph = pad.first; s.pw = pad.second;
  s.dh = dil.first; s.dw = dil.second;
  const std::string where = std::string(op) + ": ";
  require(static_cast<int64_t>(y.shape(0)) == s.N && static_cast<int64_t>(y.shape(1)) == s.C,
          where + "output " + shape_str(y) + " does not match input " + shape_str(x));
  require(s.kh >= 1 && s.kw >= 1, where + "kernel_size must be positive");
  require(s.sh >= 1 && s.sw >= 1, where + "stride must be positive");
  require(s.dh >= 1 && s.dw >= 1, where + "dilation must be positive");
  require(s.ph >= 0 && s.pw >= 0, where + "padding must be >= 0");
  for (int64_t v : {s.H, s.W, s.P, s.Q, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw})
    require(v <= kMaxDim, where + "sizes and window parameters must be below 2**31");
  // Window positions are computed in int64: o*stride + k*dil must not overflow.
  mul_checked(s.P, s.sh, op); mul_checked(s.Q, s.sw, op);
  mul_checked(s.kh, s.dh, op); mul_checked(s.kw, s.dw, op);
  mul_checked(mul_checked(s.N, s.C, op), mul_checked(s.H, s.W, op), op);
  mul_checked(mul_checked(s.N, s.C, op), mul_checked(s.P, s.Q, op), op);
  // Every window starts inside the padded input (PyTorch's output sizes guarantee it);
  // this bounds the kernels' row buffers by the input size.
  if (windows)
    require((s.P - 1) * s.sh <= s.H - 1 + 2 * s.ph && (s.Q - 1) * s.sw <= s.W - 1 + 2 * s.pw,
            where + "output " + shape_str(y) + " too large for input " + shape_str(x) +
                " with this window");
  return s;
}

template <class T>
void def_pool(nb::module_& m) {
  m.def(
      "max_pool2d_fwd",
      [](In<T, 4> x, Out<T, 4> y, std::optional<Out<int64_t, 4>> idx, Pair kernel, Pair stride,
         Pair pad, Pair dil) {
        const PoolShape s = pool_shape("max_pool2d_fwd", x, y, kernel, stride, pad, dil);
        if (idx)
          require(idx->shape(0) == y.shape(0) && idx->shape(1) == y.shape(1) &&
                      idx->shape(2) == y.shape(2) && idx->shape(3) == y.shape(3),
                  "max_pool2d_fwd: indices " + shape_str(*idx) + " must match output " +
                      shape_str(y));
        int64_t* ip = idx ? idx->data() : nullptr;
        FC_DISPATCH(max_pool2d_fwd<T>(s, x.data(), y.data(), ip));
      },
      nb::arg("x"), nb::arg("y"), nb::arg("indices").none(), nb::arg("kernel_size"),
      nb::arg("stride"), nb::arg("padding"), nb::arg("dilation"), GIL(),
      "Max pooling into y (and int64 indices h*W+w, if given), as PyTorch.");
  m.def(
      "max_pool2d_bwd",
      [](In<T, 4> gy, In<int64_t, 4> idx, Out<T, 4> gx) {
        require(idx.shape(0) == gy.shape(0) && idx.shape(1) == gy.shape(1) &&
                    idx.shape(2) == gy.shape(2) && idx.shape(3) == gy.shape(3),
                "max_pool2d_bwd: indices " + shape_str(idx) + " must match grad_out " +
                    shape_str(gy));
        const PoolShape s = pool_shape("max_pool2d_bwd", gx, gy, {1, 1}, {1, 1}, {0, 0}, {1, 1}, false);
        FC_DISPATCH(max_pool2d_bwd<T>(s, gy.data(), idx.data(), gx.data()));
      },
      nb::arg("grad_out"), nb::arg("indices"), nb::arg("grad_x"), GIL(),
      "Scatter-adds grad_out into grad_x through the max-pool indices (out-of-range ignored).");
  m.def(
      "avg_pool2d_fwd",
      [](In<T, 4> x, Out<T, 4> y, Pair kernel, Pair stride, Pair pad, bool cip,
         int64_t div_override) {
        const PoolShape s = pool_shape("avg_pool2d_fwd", x, y, kernel, stride, pad, {1, 1});
        FC_DISPATCH(avg_pool2d_fwd<T>(s, cip, div_override, x.data(), y.data()));
      },
      nb::arg("x"), nb::arg("y"), nb::arg("kernel_size"), nb::arg("stride"), nb::arg("padding"),
      nb::arg("count_include_pad"), nb::arg("divisor_override"), GIL(),
      "Average pooling into y, as PyTorch (divisor_override 0: none).");
  m.def(
      "avg_pool2d_bwd",
      [](In<T, 4> gy, Out<T, 4> gx, Pair kernel, Pair stride, Pair pad, bool cip,
         int64_t div_override) {
        const PoolShape s = pool_shape("avg_pool2d_bwd", gx, gy, kernel, stride, pad, {1, 1});
        FC_DISPATCH(avg_pool2d_bwd<T>(s, cip, div_override, gy.data(), gx.data()));
      },
      nb::arg("grad_out"), nb::arg("grad_x"), nb::arg("kernel_size"), nb::arg("stride"),
      nb::arg("padding"), nb::arg("count_include_pad"), nb::arg("divisor_override"), GIL());
  m.def(
      "adaptive_avg_pool2d_fwd",
      [](In<T, 4> x, Out<T, 4> y) {
        const PoolShape s =
            pool_shape("adaptive_avg_pool2d_fwd", x, y, {1, 1}, {1, 1}, {0, 0}, {1, 1}, false);
        require(s.H >= 1 && s.W >= 1 && s.P >= 1 && s.Q >= 1,
                "adaptive_avg_pool2d_fwd: empty spatial size");
        FC_DISPATCH(adaptive_avg_pool2d_fwd<T>(s, x.data(), y.data()));
      },
      nb::arg("x"), nb::arg("y"), GIL(), "Adaptive average pooling to y's spatial size.");
  m.def(
      "adaptive_avg_pool2d_bwd",
      [](In<T, 4> gy, Out<T, 4> gx) {
        const PoolShape s =
            pool_shape("adaptive_avg_pool2d_bwd", gx, gy, {1, 1}, {1, 1}, {0, 0}, {1, 1}, false);
        require(s.H >= 1 && s.W >= 1 && s.P >= 1 && s.Q >= 1,
                "adaptive_avg_pool2d_bwd: empty spatial size");
        FC_DISPATCH(adaptive_avg_pool2d_bwd<T>(s, gy.data(), gx.data()));
      },
      nb::arg("grad_out"), nb::arg("grad_x"), GIL());
}

}  // namespace

void bind_pool(nb::module_& m) {
  def_pool<float>(m);
  def_pool<double>(m);
}

}  // namespace fc::bind
