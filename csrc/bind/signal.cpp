// Bindings for the signal kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_signal(nb::module_& m) { (void)m; }

}  // namespace fc::bind
