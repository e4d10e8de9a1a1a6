// Bindings for the conv_winograd kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_conv_winograd(nb::module_& m) { (void)m; }

}  // namespace fc::bind
