// Bindings for the conv_im2col kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_conv_im2col(nb::module_& m) { (void)m; }

}  // namespace fc::bind
