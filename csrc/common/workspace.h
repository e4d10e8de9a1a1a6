// Per-thread scratch buffers that keep their largest size between calls: a fresh
// multi-megabyte allocation on every call costs more in page faults (the first touch of
// each new 4 KB page) than most of the work that fills it. Each kernel file names its own
// Owner type, so two kernels (one calling the other) never share a buffer; `slot` picks
// one of that owner's Slots buffers. The memory belongs to the calling thread (or OpenMP
// worker) and is freed when it exits; contents are never assumed between calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fc {

template <class T, class Owner, int Slots>
T* thread_workspace(int slot, size_t n) {
  thread_local std::vector<T> buf[Slots];
  constexpr size_t pad = 64 / sizeof(T);  // room to start on a cache line
  std::vector<T>& b = buf[slot];
  if (b.size() < n + pad) {
    // Release the old block first: growing in place would hold both at once.
    b.clear();
    b.shrink_to_fit();
    b.resize(n + pad);
  }
  const uintptr_t p = (reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63);
  return reinterpret_cast<T*>(p);
}

}  // namespace fc
