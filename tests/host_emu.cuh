// Host emulation of the CUDA subset the kernels in csrc/cuda use, for logic tests on
// machines without a GPU (tests/_hostemu.py). Each thread of a block is a
// ucontext fiber; __syncthreads() switches back to a scheduler that resumes the fibers in
// turn once all of them have reached the barrier; blocks run one after another. So
// __shared__ memory can be a static, and atomics are plain read-modify-writes. Warp
// shuffles go through a block-wide buffer between two barriers, which is valid because the
// kernels here only shuffle with the whole block converged (block_sum).
// This proves index arithmetic, predicates, tiling and synchronisation structure; it says
// nothing about timing, the memory model or code generation on real hardware.
#pragma once
#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

struct uint3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }

namespace fc_emu {
struct Fiber {
  ucontext_t ctx;  // used once, to enter the fiber on its own stack
  jmp_buf jb;      // later switches: _setjmp/_longjmp, which make no system call
  uint3 tid;
  bool started, done;
};
inline Fiber* cur = nullptr;
inline Fiber solo;  // the thread being run when a kernel needs no barrier
inline bool fibers_on = false;
inline jmp_buf sched;
inline uint3 block_idx, grid_dim, block_dim;
inline float shfl_buf[1024];
inline int error = 0;
}  // namespace fc_emu

#define threadIdx (fc_emu::cur->tid)
#define blockIdx (fc_emu::block_idx)
#define blockDim (fc_emu::block_dim)
#define gridDim (fc_emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

inline void __syncthreads() {
  if (!fc_emu::fibers_on) {  // a barrier in a kernel launched without fibers
    fc_emu::error = 2;
    return;
  }
  if (!_setjmp(fc_emu::cur->jb)) _longjmp(fc_emu::sched, 1);
}
inline float __shfl_down_sync(unsigned, float v, int o) {
  const int t = threadIdx.x, lane = t & 31;
  fc_emu::shfl_buf[t] = v;
  __syncthreads();
  const float r = lane + o < 32 ? fc_emu::shfl_buf[t + o] : v;
  __syncthreads();
  return r;
}
inline float atomicAdd(float* p, float v) { const float o = *p; *p = o + v; return o; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
using std::fmaf;
using std::sqrt;

namespace fc_emu {
template <class T> T arg(void* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }
template <class... A> constexpr std::size_t arity(void (*)(A...)) { return sizeof...(A); }
template <class... A, std::size_t... I>
void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(arg<std::decay_t<A>>(args[I])...);
}
template <auto K> void run(void** args) { call(K, args, std::make_index_sequence<arity(K)>{}); }

typedef void (*Entry)(void**);
inline Entry g_entry;
inline void** g_args;
inline void fiber_main() {
  g_entry(g_args);
  cur->done = true;
  _longjmp(sched, 1);
}

// Runs one launch. Returns 0; 1 if the threads of a block disagreed about a barrier;
// 2 if a kernel launched without fibers reached a barrier.
inline int launch(Entry e, unsigned gx, unsigned gy, unsigned gz, unsigned bx, void** args,
                  int use_fibers) {
  constexpr std::size_t kStack = 1 << 16;
  g_entry = e;
  g_args = args;
  grid_dim = uint3{gx, gy, gz};
  block_dim = uint3{bx, 1, 1};
  error = 0;
  fibers_on = use_fibers != 0;
  if (!fibers_on) {
    // No barriers: threads of a block can run to completion one after another.
    cur = &solo;
    for (unsigned z = 0; z < gz; ++z)
      for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x) {
          block_idx = uint3{x, y, z};
          for (unsigned t = 0; t < bx && !error; ++t) {
            solo.tid = uint3{t, 0, 0};
            e(args);
          }
          if (error) return error;
        }
    return 0;
  }
  std::vector<Fiber> fibers(bx);
  std::vector<char> stacks(kStack * bx);
  ucontext_t proto;
  getcontext(&proto);
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        block_idx = uint3{x, y, z};
        for (unsigned t = 0; t < bx; ++t) {
          Fiber& f = fibers[t];
          f.tid = uint3{t, 0, 0};
          f.started = f.done = false;
          f.ctx = proto;
          f.ctx.uc_stack.ss_sp = stacks.data() + t * kStack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiber_main, 0);
        }
        for (;;) {
          unsigned finished = 0;
          for (unsigned t = 0; t < bx; ++t) {
            Fiber& f = fibers[t];
            if (f.done) { ++finished; continue; }
            cur = &f;
            if (!_setjmp(sched)) {
              if (!f.started) {
                f.started = true;
                setcontext(&f.ctx);
              }
              _longjmp(f.jb, 1);
            }
            if (f.done) ++finished;
          }
          if (finished == bx) break;
          if (finished) return 1;  // some threads exited while others wait at a barrier
        }
      }
  return 0;
}
}  // namespace fc_emu
