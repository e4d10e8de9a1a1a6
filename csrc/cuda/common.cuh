// Helpers shared by every kernel file. The Python loader pastes this header into each
// .cu source before handing it to NVRTC, so (a) NVRTC needs no include path and (b) CuPy's
// on-disk kernel cache, which hashes only the source text, sees a header change as a new
// source. Nothing from the C++ standard library is used: NVRTC has no host headers.

namespace fc {

typedef long long i64;

// Threads per block for every 1-D launch; the Python wrappers use the same number.
constexpr int kThreads = 256;

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// Sum over a block of kThreads threads; every thread gets the result. `red` must hold
// kThreads / 32 floats. Starts and ends with a barrier so the buffer can be reused.
__device__ __forceinline__ float block_sum(float v, float* red) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0.f;
  #pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) t += red[i];
  return t;
}

}  // namespace fc
