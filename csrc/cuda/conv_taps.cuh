// Receptive-field walks shared by the one-thread-per-element convolution kernels
// (conv_direct.cu, conv_depthwise.cu). A depthwise filter is a direct filter with one input
// channel, so the two files differ only in which channel a filter reads and whether there
// is a channel loop around these helpers. Top/left padding is passed; bottom/right is
// implied by the output size.

namespace fc {

// acc + sum_{r,s} wb[r*S + s] * xb[(h0 + r*dh)*W + w0 + s*dw] over the taps that fall inside
// the H x W plane xb (the others read the zero padding). Unsigned compares fold the two
// bounds checks into one.
__device__ __forceinline__ float window_dot(const float* __restrict__ xb,
                                            const float* __restrict__ wb, int H, int W, int R,
                                            int S, int h0, int w0, int dh, int dw, float acc) {
  for (int r = 0; r < R; ++r) {
    const int h = h0 + r * dh;
    if ((unsigned)h >= (unsigned)H) continue;
    for (int s = 0; s < S; ++s) {
      const int ww = w0 + s * dw;
      if ((unsigned)ww < (unsigned)W) acc = fmaf(wb[r * S + s], xb[h * W + ww], acc);
    }
  }
  return acc;
}

// Gather form of the data gradient, one axis: the output coordinate o (0 <= o < O) whose
// tap at offset `off` (r*dh or s*dw) reads input coordinate i, i.e. i + pad - off ==
// o * stride; -1 when the tap reaches no output (between strides, or past an edge).
__device__ __forceinline__ int tap_source(int i, int pad, int off, int stride, int O) {
  const int t = i + pad - off;
  if (t < 0 || t % stride) return -1;
  const int o = t / stride;
  return o < O ? o : -1;
}

// This thread's share (threads stride over N*P*Q by blockDim.x) of the weight gradient of
// one tap: sum_{n,p,q} gy[n,k,p,q] * x[n,c,p*sh - ph + r*dh, q*sw - pw + s*dw], where c is
// the input channel filter k reads. The caller reduces over the block.
__device__ __forceinline__ float weight_tap_partial(const float* __restrict__ gy,
                                                    const float* __restrict__ x, int N, int C,
                                                    int H, int W, int K, int P, int Q, int k,
                                                    int c, int r, int s, int sh, int sw,
                                                    int ph, int pw, int dh, int dw) {
  const int PQ = P * Q, total = N * PQ;
  float acc = 0.f;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int n = j / PQ, pq = j - n * PQ, p = pq / Q, q = pq - p * Q;
    const int h = p * sh - ph + r * dh, ww = q * sw - pw + s * dw;
    if ((unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W)
      acc = fmaf(gy[(n * K + k) * PQ + pq], x[((n * C + c) * H + h) * W + ww], acc);
  }
  return acc;
}

}  // namespace fc
