// Bindings for the misc kernels.
#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

void bind_misc(nb::module_& m) { (void)m; }

}  // namespace fc::bind
