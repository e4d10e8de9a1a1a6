// The output stage of every forward convolution:
//   y = clamp(conv(x, w) + bias[k] + residual, lo, hi)
// bias and residual may be null; lo/hi = -inf/+inf is no activation, 0/+inf is ReLU,
// 0/6 is ReLU6. Inference fuses batch norm (folded into w and bias), a residual add and
// the activation into the convolution's stores this way (fastconv.compile), so none of
// them costs another pass over the activations.
#pragma once
#include <cstdint>
#include <limits>

namespace fc {

template <class T>
struct Epilogue {
  const T* bias = nullptr;      // K values, or null
  const T* residual = nullptr;  // an NCHW array shaped like y (never overlapping it), or null
  T lo = -std::numeric_limits<T>::infinity();
  T hi = std::numeric_limits<T>::infinity();

  static Epilogue with_bias(const T* b) {
    Epilogue e;
    e.bias = b;
    return e;
  }
  bool clamps() const { return lo > -std::numeric_limits<T>::infinity() ||
                               hi < std::numeric_limits<T>::infinity(); }
  // Anything beyond the bias, which every kernel adds in its own stores.
  bool has_post() const { return residual != nullptr || clamps(); }
  // NaN passes through both comparisons unchanged, as torch's relu / relu6 keep it.
  T act(T v) const {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
  }
  // The whole stage for one output element: k its channel, i its flat NCHW index.
  T apply(T acc, int64_t k, int64_t i) const {
    T v = acc + (bias ? bias[k] : T(0));
    if (residual) v += residual[i];
    return act(v);
  }
};

}  // namespace fc
