// Bindings for the scipy.signal-style correlation kernels (csrc/cpu/signal.cpp).
// fastconv/signal.py validates and normalises arguments; the checks here only keep a
// direct call into fastconv._native from reading or writing out of bounds.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {

// Offsets are user-reachable (mode arithmetic); keep every index the kernel forms
// (offset + extent + kernel) far inside int64.
constexpr int64_t kMaxOffset = int64_t(1) << 52;

void check_common(int64_t B, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t kh,
                  int64_t kw, Pair offset, int boundary) {
  require(boundary >= 0 && boundary <= 2, "boundary must be 0 (fill), 1 (wrap) or 2 (symm)");
  require(offset.first > -kMaxOffset && offset.first < kMaxOffset && offset.second > -kMaxOffset &&
              offset.second < kMaxOffset,
          "offset out of range");
  const bool work = B > 0 && Ho > 0 && Wo > 0 && kh > 0 && kw > 0;
  require(!work || boundary == 0 || (H > 0 && W > 0),
          "boundary 'wrap' / 'symm' needs a non-empty image");
  mul_checked(mul_checked(B, H, "input"), W, "input");
  mul_checked(mul_checked(B, Ho, "output"), Wo, "output");
  mul_checked(kh, kw, "kernel");
  // The kernel's strip: (Ho + kh) rows of (Wo + kw + slack) elements at most.
  mul_checked(Ho + kh + 1, Wo + kw + 256, "workspace");
}

// A 3-D input of any strides (checked: the last axis contiguous).
template <class T>
using RowsIn = nb::ndarray<const T, nb::ndim<3>, nb::device::cpu>;

template <class T, class K>
void def_signal(nb::module_& m) {
  m.def(
      "signal_corr2d",
      [](RowsIn<T> x, In<T, 2> w, Out<T, 3> y, Pair offset, int boundary, T fill) {
        const int64_t B = x.shape(0), H = x.shape(1), W = x.shape(2);
        // Rows must be contiguous; images and rows may be strided (a view is read in place).
        require(W <= 1 || B == 0 || H == 0 || x.stride(2) == 1,
                "x: the last axis must be contiguous");
        const int64_t kh = w.shape(0), kw = w.shape(1);
        const int64_t Ho = y.shape(1), Wo = y.shape(2);
        require(static_cast<int64_t>(y.shape(0)) == B,
                "output " + shape_str(y) + " does not match input " + shape_str(x));
        check_common(B, H, W, Ho, Wo, kh, kw, offset, boundary);
        // noconvert: an implicit dtype conversion would write the result into a temporary.
        // Integer images run in uint64_t: the same bits as int64, but wrapping is defined.
        FC_DISPATCH(signal_corr2d<K>(reinterpret_cast<const K*>(x.data()), B, H, W,
                                     static_cast<int64_t>(x.stride(0)),
                                     static_cast<int64_t>(x.stride(1)),
                                     reinterpret_cast<const K*>(w.data()), kh, kw,
                                     reinterpret_cast<K*>(y.data()), Ho, Wo, offset.first,
                                     offset.second, boundary, static_cast<K>(fill)));
      },
      nb::arg("x").noconvert(), nb::arg("w").noconvert(), nb::arg("y").noconvert(), nb::arg("offset"), nb::arg("boundary"),
      nb::arg("fill"), GIL(),
      "y[b,m,n] = sum_ij ext(x[b])[m+oh+i, n+ow+j] * w[i,j] (boundary 0 fill, 1 wrap, 2 symm).");
  m.def(
      "signal_extend2d",
      [](In<T, 3> x, Out<T, 3> xp, Pair offset, int boundary, T fill) {
        const int64_t B = x.shape(0), H = x.shape(1), W = x.shape(2);
        const int64_t Hp = xp.shape(1), Wp = xp.shape(2);
        require(static_cast<int64_t>(xp.shape(0)) == B,
                "output " + shape_str(xp) + " does not match input " + shape_str(x));
        check_common(B, H, W, Hp, Wp, 1, 1, offset, boundary);
        FC_DISPATCH(signal_extend2d<K>(reinterpret_cast<const K*>(x.data()), B, H, W,
                                       reinterpret_cast<K*>(xp.data()), Hp, Wp, offset.first,
                                       offset.second, boundary, static_cast<K>(fill)));
      },
      nb::arg("x").noconvert(), nb::arg("xp").noconvert(), nb::arg("offset"), nb::arg("boundary"), nb::arg("fill"),
      GIL(), "xp[b,r,c] = ext(x[b])[r+oh, c+ow]: the boundary-extended image.");
}

}  // namespace

void bind_signal(nb::module_& m) {
  def_signal<float, float>(m);
  def_signal<double, double>(m);
  def_signal<int64_t, uint64_t>(m);
}

}  // namespace fc::bind
