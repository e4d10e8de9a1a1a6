// Brings the per-ISA kernel declarations into scope for the dispatching bindings.
#pragma once
#include <cstdint>
#include <complex>

#include "common/isa.h"
#include "common/epilogue.h"
#include "common/shapes.h"

namespace fc {
namespace generic {
#include "cpu/decls.inc"
}
#ifdef FC_HAVE_avx2
namespace avx2 {
#include "cpu/decls.inc"
}
#endif
#ifdef FC_HAVE_avx512
namespace avx512 {
#include "cpu/decls.inc"
}
#endif
}  // namespace fc
