// ReLU forward and backward. Float4 accesses when the caller says every array is 16-byte
// aligned; the tail (n % 4) is handled element-wise by the same launch.
#include "common.cuh"

namespace fc {

// NaN propagates, as torch.relu and numpy.maximum(x, 0) do.
__device__ __forceinline__ float relu1(float v) { return (v > 0.f || v != v) ? v : 0.f; }

__global__ void __launch_bounds__(kThreads)
relu_fwd(const float* __restrict__ x, float* __restrict__ y, int n, int vec) {
  const int stride = gridDim.x * blockDim.x;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int done = 0;
  if (vec) {
    const int n4 = n / 4;
    for (int j = i; j < n4; j += stride) {
      float4 v = reinterpret_cast<const float4*>(x)[j];
      v.x = relu1(v.x); v.y = relu1(v.y); v.z = relu1(v.z); v.w = relu1(v.w);
      reinterpret_cast<float4*>(y)[j] = v;
    }
    done = n4 * 4;
  }
  for (int j = done + i; j < n; j += stride) y[j] = relu1(x[j]);
}

// grad where y > 0, else 0 (y is the forward output).
__global__ void __launch_bounds__(kThreads)
relu_bwd(const float* __restrict__ gy, const float* __restrict__ y, float* __restrict__ gx,
         int n, int vec) {
  const int stride = gridDim.x * blockDim.x;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int done = 0;
  if (vec) {
    const int n4 = n / 4;
    for (int j = i; j < n4; j += stride) {
      const float4 g = reinterpret_cast<const float4*>(gy)[j];
      const float4 v = reinterpret_cast<const float4*>(y)[j];
      reinterpret_cast<float4*>(gx)[j] = make_float4(v.x > 0.f ? g.x : 0.f, v.y > 0.f ? g.y : 0.f,
                                                     v.z > 0.f ? g.z : 0.f, v.w > 0.f ? g.w : 0.f);
    }
    done = n4 * 4;
  }
  for (int j = done + i; j < n; j += stride) gx[j] = y[j] > 0.f ? gy[j] : 0.f;
}

}  // namespace fc
