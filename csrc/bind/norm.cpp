// Bindings for the norm kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_norm(nb::module_& m) { (void)m; }

}  // namespace fc::bind
