// Shared helpers for the nanobind bindings: array types, shape checks, conv shapes.
// Everything the Python layer validated is checked again here (cheaply), so a direct
// call into fastconv._native with bad sizes raises ValueError instead of reading out
// of bounds.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/epilogue.h"
#include "common/shapes.h"

namespace fc::bind {
namespace nb = nanobind;

template <class T, int D>
using In = nb::ndarray<const T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;
template <class T, int D>
using Out = nb::ndarray<T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;
template <class T, int D>
using OptIn = std::optional<In<T, D>>;
using GIL = nb::call_guard<nb::gil_scoped_release>;
// Every array argument is bound with .noconvert(): nanobind would otherwise convert a
// wrong-dtype or non-contiguous *output* into a temporary and silently drop the result.
using Pair = std::pair<int64_t, int64_t>;
// The default activation clamp of a forward binding: none.
inline constexpr double kInf = std::numeric_limits<double>::infinity();

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline void require(bool ok, const std::string& msg) {
  if (!ok) fail(msg);
}

// a * b with an overflow check against int64 (sizes of workspaces, flattened shapes).
inline int64_t mul_checked(int64_t a, int64_t b, const char* what) {
  if (a < 0 || b < 0) fail(std::string(what) + ": negative size");
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    fail(std::string(what) + ": size overflows int64");
  return a * b;
}

template <class A>
std::string shape_str(const A& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + ")";
}

// Builds and checks a ConvShape from the input-side, filter and output-side arrays.
template <class X, class Wt, class Y>
ConvShape conv_shape(const X& x, const Wt& w, const Y& y, Pair stride, Pair pad, Pair dil,
                     int64_t groups) {
  ConvShape s{};
  s.N = x.shape(0); s.C = x.shape(1); s.H = x.shape(2); s.W = x.shape(3);
  s.K = w.shape(0); s.R = w.shape(2); s.S = w.shape(3);
  s.P = y.shape(2); s.Q = y.shape(3);
  s.sh = stride.first; s.sw = stride.second;
  s.ph = pad.first; s.pw = pad.second;
  s.dh = dil.first; s.dw = dil.second;
  s.groups = groups;
  require(groups >= 1, "groups must be >= 1");
  require(s.sh >= 1 && s.sw >= 1, "stride must be >= 1");
  require(s.dh >= 1 && s.dw >= 1, "dilation must be >= 1");
  require(s.ph >= 0 && s.pw >= 0, "padding must be >= 0");
  require(s.C % groups == 0 && s.K % groups == 0, "groups must divide channels and filters");
  require(static_cast<int64_t>(w.shape(1)) * groups == s.C,
          "weight " + shape_str(w) + " does not match input " + shape_str(x));
  require(static_cast<int64_t>(y.shape(0)) == s.N && static_cast<int64_t>(y.shape(1)) == s.K,
          "output " + shape_str(y) + " does not match input " + shape_str(x) + " and weight " +
              shape_str(w));
  // Every output position must map to a window that starts inside the padded input.
  require(s.P == 0 || (s.P - 1) * s.sh <= s.H - 1 + 2 * s.ph + s.sh,
          "output height too large for input");
  require(s.Q == 0 || (s.Q - 1) * s.sw <= s.W - 1 + 2 * s.pw + s.sw,
          "output width too large for input");
  mul_checked(mul_checked(s.N, s.C, "input"), mul_checked(s.H, s.W, "input"), "input");
  mul_checked(mul_checked(s.N, s.K, "output"), mul_checked(s.P, s.Q, "output"), "output");
  return s;
}

template <class B>
const typename B::Scalar* opt_data(const std::optional<B>& b) {
  return b ? b->data() : nullptr;
}

// The forward output stage from the binding's arguments, checked against y: bias (K),
// residual shaped like y and not overlapping it, lo <= hi (either may be infinite).
template <class T>
Epilogue<T> make_epilogue(const ConvShape& s, const OptIn<T, 1>& bias, const OptIn<T, 4>& residual,
                          const Out<T, 4>& y, double lo, double hi) {
  require(!bias || static_cast<int64_t>(bias->shape(0)) == s.K, "bias must have K elements");
  Epilogue<T> ep = Epilogue<T>::with_bias(opt_data(bias));
  if (residual) {
    for (int d = 0; d < 4; ++d)
      require(residual->shape(d) == y.shape(d),
              "residual " + shape_str(*residual) + " must have the output's shape " + shape_str(y));
    const T* r = residual->data();
    const T* yb = y.data();
    const size_t n = y.size();
    require(n == 0 || r + n <= yb || yb + n <= r, "residual must not overlap the output");
    ep.residual = r;
  }
  require(lo <= hi, "the activation clamp needs lo <= hi");  // also refuses NaN
  ep.lo = static_cast<T>(lo);
  ep.hi = static_cast<T>(hi);
  return ep;
}

}  // namespace fc::bind
