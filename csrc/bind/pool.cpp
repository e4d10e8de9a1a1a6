// Bindings for the pool kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_pool(nb::module_& m) { (void)m; }

}  // namespace fc::bind
