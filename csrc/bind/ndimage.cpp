// Bindings for the scipy.ndimage-style filters (csrc/cpu/ndimage.cpp).
// fastconv/ndimage.py validates and normalises arguments; the checks here only keep a
// direct call into fastconv._native from reading or writing out of bounds.
#include "bind/arrays.h"
#include "cpu/kernels.h"

#include <tuple>
#include <nanobind/stl/tuple.h>

namespace fc::bind {

namespace {

constexpr int64_t kMaxShift = int64_t(1) << 40;

void check_mode(int mode, int64_t shift) {
  require(mode >= 0 && mode <= 4,
          "mode must be 0 (constant), 1 (nearest), 2 (reflect), 3 (mirror) or 4 (wrap)");
  require(shift > -kMaxShift && shift < kMaxShift, "shift out of range");
}

template <class A, class B>
void same_shape(const A& x, const B& y) {
  bool ok = x.ndim() == y.ndim();
  for (size_t i = 0; ok && i < x.ndim(); ++i) ok = x.shape(i) == y.shape(i);
  require(ok, "output " + shape_str(y) + " does not match input " + shape_str(x));
}

template <class T>
void def_ndimage(nb::module_& m) {
  m.def(
      "ndi_correlate1d",
      [](In<T, 3> x, Out<T, 3> y, In<T, 1> w, int64_t shift, int sym, int mode, T cval) {
        same_shape(x, y);
        check_mode(mode, shift);
        const int64_t L = w.shape(0);
        require(L > 0, "weights must not be empty");
        mul_checked(mul_checked(x.shape(0), x.shape(1) + L, "input"), x.shape(2), "input");
        FC_DISPATCH(ndi_correlate1d<T>(x.data(), y.data(), x.shape(0), x.shape(1), x.shape(2),
                                       w.data(), L, shift, sym, mode, cval));
      },
      nb::arg("x").noconvert(), nb::arg("y").noconvert(), nb::arg("w").noconvert(),
      nb::arg("shift"), nb::arg("sym"), nb::arg("mode"), nb::arg("cval"), GIL(),
      "y[o,i,c] = sum_k w[k] ext(x[o,:,c])[i+k-shift] in SciPy's order (sym: 1, -1, 0).");
  m.def(
      "ndi_uniform1d",
      [](In<T, 3> x, Out<T, 3> y, int64_t size, int64_t shift, int mode, double cval) {
        same_shape(x, y);
        check_mode(mode, shift);
        require(size > 0 && size < kMaxShift, "size must be positive");
        mul_checked(mul_checked(x.shape(0), x.shape(1) + size, "input"), x.shape(2) + 16,
                    "input");
        FC_DISPATCH(ndi_uniform1d<T>(x.data(), y.data(), x.shape(0), x.shape(1), x.shape(2),
                                     size, shift, mode, cval));
      },
      nb::arg("x").noconvert(), nb::arg("y").noconvert(), nb::arg("size"), nb::arg("shift"),
      nb::arg("mode"), nb::arg("cval"), GIL(),
      "SciPy's running-mean uniform filter along the middle axis (computed in double).");
  m.def(
      "ndi_correlate2d",
      [](In<T, 3> x, Out<T, 3> y, In<T, 2> w, Pair shift, int mode, T cval) {
        same_shape(x, y);
        check_mode(mode, shift.first);
        check_mode(mode, shift.second);
        const int64_t kh = w.shape(0), kw = w.shape(1);
        require(kh > 0 && kw > 0, "weights must not be empty");
        mul_checked(mul_checked(x.shape(0), x.shape(1), "input"), x.shape(2), "input");
        mul_checked(x.shape(1) + kh + 1, x.shape(2) + kw + 256, "workspace");
        FC_DISPATCH(ndi_correlate2d<T>(x.data(), y.data(), x.shape(0), x.shape(1), x.shape(2),
                                       w.data(), kh, kw, shift.first, shift.second, mode,
                                       cval));
      },
      nb::arg("x").noconvert(), nb::arg("y").noconvert(), nb::arg("w").noconvert(),
      nb::arg("shift"), nb::arg("mode"), nb::arg("cval"), GIL(),
      "y[b,i,j] = sum over non-zero w[p,q] (row-major) of ext(x[b])[i+p-sh, j+q-sw].");
  m.def(
      "ndi_separable2d",
      [](In<T, 3> x, Out<T, 3> y, In<T, 1> wh, std::tuple<int, int64_t, int64_t, int, int> ph,
         In<T, 1> ww, std::tuple<int, int64_t, int64_t, int, int> pw, bool h_first, T cval) {
        same_shape(x, y);
        const auto [kh, Lh, shh, symh, modeh] = ph;
        const auto [kw, Lw, shw, symw, modew] = pw;
        for (const auto& [kind, L, sh, w] :
             {std::tuple{kh, Lh, shh, wh.shape(0)}, std::tuple{kw, Lw, shw, ww.shape(0)}}) {
          require(kind == 0 || kind == 1, "kind must be 0 (correlate) or 1 (uniform)");
          require(L > 0 && L < kMaxShift, "filter length must be positive");
          require(kind == 1 || static_cast<int64_t>(w) == L, "weights length does not match");
          require(sh >= 0 && sh < L, "shift must be in [0, length)");
        }
        check_mode(modeh, shh);
        check_mode(modew, shw);
        mul_checked(mul_checked(x.shape(0), x.shape(1) + Lh, "input"), x.shape(2) + Lw + 64,
                    "input");
        mul_checked(Lh + 2, x.shape(2) + Lw + 64, "workspace");
        FC_DISPATCH(ndi_separable2d<T>(x.data(), y.data(), x.shape(0), x.shape(1), x.shape(2),
                                       wh.data(), Lh, shh, symh, modeh, kh, ww.data(), Lw,
                                       shw, symw, modew, kw, h_first ? 1 : 0, cval));
      },
      nb::arg("x").noconvert(), nb::arg("y").noconvert(), nb::arg("wh").noconvert(),
      nb::arg("ph"), nb::arg("ww").noconvert(), nb::arg("pw"), nb::arg("h_first"),
      nb::arg("cval"), GIL(),
      "Fused H and W passes; ph/pw = (kind, length, shift, sym, mode), kind 1 = uniform.");
}

}  // namespace

void bind_ndimage(nb::module_& m) {
  def_ndimage<float>(m);
  def_ndimage<double>(m);
}

}  // namespace fc::bind
