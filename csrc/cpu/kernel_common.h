// Included first by every kernel source (csrc/cpu/*.cpp). FC_ISA names the namespace
// this translation unit's copy lives in; CMake compiles each source once per ISA.
#pragma once
#include <cstdint>
#include <complex>

#include "common/parallel.h"
#include "common/epilogue.h"
#include "common/shapes.h"
#include "common/workspace.h"

#ifndef FC_ISA
#error "kernel sources are compiled by CMake with FC_ISA set"
#endif

namespace fc {
namespace FC_ISA {
#include "cpu/decls.inc"
}
}  // namespace fc
