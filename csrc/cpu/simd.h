// Fixed-width vectors for the hand-vectorised kernels (GCC vector extensions), as wide
// as the ISA this translation unit is compiled for: 512-bit on AVX-512, 256-bit on AVX2,
// 128-bit elsewhere (SSE2 is the x86-64 baseline; other targets get GCC's emulation).
#pragma once
#include <cstring>

#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2)
#include <immintrin.h>
#endif

#ifndef FC_ISA
#error "kernel sources are compiled by CMake with FC_ISA set"
#endif

namespace fc {
namespace FC_ISA {

#if defined(FC_ISA_avx512)
constexpr int kVecBytes = 64;
#elif defined(FC_ISA_avx2)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <class T>
struct Simd {
  typedef T V __attribute__((vector_size(kVecBytes)));
  static constexpr int L = kVecBytes / static_cast<int>(sizeof(T));
  // memcpy: unaligned access without aliasing trouble; compiles to one vector move.
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  // Not V{} + s: +0.0 + s is not the identity for s = -0.0, so that form costs a scalar
  // add and a register shuffle per broadcast instead of one broadcast-from-memory load.
  static V splat(T s) {
#if defined(FC_ISA_avx512)
    if constexpr (sizeof(T) == 4) return reinterpret_cast<V>(_mm512_set1_ps(s));
    else return reinterpret_cast<V>(_mm512_set1_pd(s));
#elif defined(FC_ISA_avx2)
    if constexpr (sizeof(T) == 4) return reinterpret_cast<V>(_mm256_set1_ps(s));
    else return reinterpret_cast<V>(_mm256_set1_pd(s));
#else
    return s - V{};  // s - 0 is exactly s, even for -0, so this folds to one broadcast
#endif
  }
};

}  // namespace FC_ISA
}  // namespace fc
