// The nanobind module fastconv._native. Each kernel family registers its functions
// from its own file in csrc/bind/; every kernel entry point releases the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "common/isa.h"
#include "common/parallel.h"

namespace nb = nanobind;

namespace fc::bind {
void bind_conv_direct(nb::module_& m);
void bind_conv_pointwise(nb::module_& m);
void bind_conv_im2col(nb::module_& m);
void bind_conv_winograd(nb::module_& m);
void bind_conv_depthwise(nb::module_& m);
void bind_gemm(nb::module_& m);
void bind_pool(nb::module_& m);
void bind_norm(nb::module_& m);
void bind_misc(nb::module_& m);
void bind_signal(nb::module_& m);
void bind_peak(nb::module_& m);
void bind_ndimage(nb::module_& m);
}  // namespace fc::bind

NB_MODULE(_native, m) {
  m.doc() = "fastconv's C++ CPU kernels";
  m.def("cpu_features", &fc::cpu_features, "CPU features fastconv tests for.");
  m.def("compiled_isas", &fc::compiled_isas, "ISA paths compiled into this build.");
  m.def("active_isa", [] { return std::string(fc::isa_name(fc::active_isa())); },
        "The ISA path kernels currently run on.");
  m.def(
      "set_isa",
      [](const std::string& name) {
        for (fc::Isa isa : {fc::Isa::generic, fc::Isa::avx2, fc::Isa::avx512})
          if (name == fc::isa_name(isa)) return fc::set_isa(isa);
        throw std::invalid_argument("unknown ISA '" + name + "' (generic, avx2, avx512)");
      },
      nb::arg("name"), "Force an ISA path (for tests and benchmarks).");
  m.def("num_threads", &fc::num_threads);
  m.def("set_num_threads", &fc::set_num_threads, nb::arg("n"));
  fc::bind::bind_conv_direct(m);
  fc::bind::bind_conv_pointwise(m);
  fc::bind::bind_conv_im2col(m);
  fc::bind::bind_conv_winograd(m);
  fc::bind::bind_conv_depthwise(m);
  fc::bind::bind_gemm(m);
  fc::bind::bind_pool(m);
  fc::bind::bind_norm(m);
  fc::bind::bind_misc(m);
  fc::bind::bind_signal(m);
  fc::bind::bind_peak(m);
  fc::bind::bind_ndimage(m);
}
