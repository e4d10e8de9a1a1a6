// Plain shape descriptors shared by every CPU kernel. All sizes are int64 and have
// been validated (and overflow-checked) by the bindings before a kernel sees them.
#pragma once
#include <cstdint>

namespace fc {

// NCHW convolution y[N,K,P,Q] = x[N,C,H,W] (*) w[K,C/groups,R,S].
// Only the top/left padding is stored: the bottom/right padding is implied by P and Q
// (reads outside the input are zeros), which is how padding="same" gets its odd pixel.
struct ConvShape {
  int64_t N, C, H, W;     // input
  int64_t K, R, S;        // filters (K outputs, R x S window)
  int64_t P, Q;           // output spatial size
  int64_t sh, sw;         // stride
  int64_t ph, pw;         // top / left padding
  int64_t dh, dw;         // dilation
  int64_t groups;
  int64_t Cg() const { return C / groups; }
  int64_t Kg() const { return K / groups; }
};

// Pooling window description (symmetric padding; ceil_mode is already folded into P, Q).
struct PoolShape {
  int64_t N, C, H, W;
  int64_t P, Q;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

}  // namespace fc
