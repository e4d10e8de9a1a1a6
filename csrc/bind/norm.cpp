// Bindings for batch normalisation (csrc/cpu/norm.cpp). Inputs are (N, C, L, 1) views
// (the functional layer flattens the spatial axes); channel vectors have C elements.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {

struct NCL {
  int64_t N, C, L;
};

template <class X>
NCL ncl(const char* op, const X& x) {
  const NCL s{static_cast<int64_t>(x.shape(0)), static_cast<int64_t>(x.shape(1)),
              mul_checked(x.shape(2), x.shape(3), op)};
  mul_checked(mul_checked(s.N, s.C, op), s.L, op);
  return s;
}

template <class A, class B>
void same_shape(const char* op, const char* name, const A& a, const B& ref) {
  bool ok = a.ndim() == ref.ndim();
  for (size_t i = 0; ok && i < a.ndim(); ++i) ok = a.shape(i) == ref.shape(i);
  require(ok, std::string(op) + ": " + name + " has shape " + shape_str(a) + ", expected " +
                  shape_str(ref));
}

template <class V>
void chan(const char* op, const char* name, const V& v, int64_t C) {
  require(static_cast<int64_t>(v.shape(0)) == C, std::string(op) + ": " + name +
                                                     " must have " + std::to_string(C) +
                                                     " elements, got " + shape_str(v));
}

template <class V>
void opt_chan(const char* op, const char* name, const std::optional<V>& v, int64_t C) {
  if (v) chan(op, name, *v, C);
}

template <class T>
void def_norm(nb::module_& m) {
  m.def(
      "batch_norm_train_fwd",
      [](In<T, 4> x, OptIn<T, 1> w, OptIn<T, 1> b, double eps, Out<T, 4> y, Out<T, 1> mean,
         Out<T, 1> var) {
        const char* op = "batch_norm_train_fwd";
        const NCL s = ncl(op, x);
        same_shape(op, "y", y, x);
        opt_chan(op, "weight", w, s.C); opt_chan(op, "bias", b, s.C);
        chan(op, "mean", mean, s.C); chan(op, "var", var, s.C);
        require(eps >= 0, std::string(op) + ": eps must be >= 0");
        FC_DISPATCH(batch_norm_train_fwd<T>(s.N, s.C, s.L, x.data(), opt_data(w), opt_data(b),
                                            eps, y.data(), mean.data(), var.data()));
      },
      nb::arg("x"), nb::arg("weight").none(), nb::arg("bias").none(), nb::arg("eps"),
      nb::arg("y"), nb::arg("mean"), nb::arg("var"), GIL(),
      "Training batch norm: y and the batch mean and biased variance per channel.");
  m.def(
      "batch_norm_eval_fwd",
      [](In<T, 4> x, In<T, 1> mean, In<T, 1> var, OptIn<T, 1> w, OptIn<T, 1> b, double eps,
         Out<T, 4> y) {
        const char* op = "batch_norm_eval_fwd";
        const NCL s = ncl(op, x);
        same_shape(op, "y", y, x);
        chan(op, "mean", mean, s.C); chan(op, "var", var, s.C);
        opt_chan(op, "weight", w, s.C); opt_chan(op, "bias", b, s.C);
        require(eps >= 0, std::string(op) + ": eps must be >= 0");
        FC_DISPATCH(batch_norm_eval_fwd<T>(s.N, s.C, s.L, x.data(), mean.data(), var.data(),
                                           opt_data(w), opt_data(b), eps, y.data()));
      },
      nb::arg("x"), nb::arg("mean"), nb::arg("var"), nb::arg("weight").none(),
      nb::arg("bias").none(), nb::arg("eps"), nb::arg("y"), GIL(),
      "Inference batch norm with the given statistics.");
  m.def(
      "batch_norm_bwd",
      [](In<T, 4> gy, In<T, 4> x, OptIn<T, 1> w, In<T, 1> mean, In<T, 1> invstd, bool training,
         Out<T, 4> gx, Out<T, 1> gw, Out<T, 1> gb) {
        const char* op = "batch_norm_bwd";
        const NCL s = ncl(op, x);
        same_shape(op, "grad_out", gy, x);
        same_shape(op, "grad_x", gx, x);
        opt_chan(op, "weight", w, s.C);
        chan(op, "mean", mean, s.C); chan(op, "invstd", invstd, s.C);
        chan(op, "grad_w", gw, s.C); chan(op, "grad_b", gb, s.C);
        FC_DISPATCH(batch_norm_bwd<T>(s.N, s.C, s.L, gy.data(), x.data(), opt_data(w),
                                      mean.data(), invstd.data(), training, gx.data(),
                                      gw.data(), gb.data()));
      },
      nb::arg("grad_out"), nb::arg("x"), nb::arg("weight").none(), nb::arg("mean"),
      nb::arg("invstd"), nb::arg("training"), nb::arg("grad_x"), nb::arg("grad_w"),
      nb::arg("grad_b"), GIL(), "Batch norm gradients (training: through the batch statistics).");
}

}  // namespace

void bind_norm(nb::module_& m) {
  def_norm<float>(m);
  def_norm<double>(m);
}

}  // namespace fc::bind
