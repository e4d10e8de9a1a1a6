// Pointwise (1x1, padding 0) convolution straight on NCHW: the `direct` algorithm's path
// for 1x1 layers (conv_direct.cpp hands over when pointwise_serves(s)).
//
//   forward        Y[n][k][j]  = sum_c W[k][c] X[n][c][j']        (j' = the strided pixel)
//   backward-data  GX[n][c][j'] = sum_k W[k][c] GY[n][k][j]        (zeros off the stride grid)
//   backward-weight GW[k][c]   = sum_n sum_j GY[n][k][j] X[n][c][j']
//
// Forward is a GEMM whose B operand is the activation as it lies in memory: for stride 1
// X[n] is already a C x HW row-major matrix, so the micro-kernel reads its rows directly
// (no im2col copy, no packing of the activation). The filters are read in place too: each
// reduction step broadcasts one value from each of MR filter rows (only a ragged last block
// of fewer than MR filters is copied, zero-padded). Packing them ([kb][c][MR], MR
// broadcasts from one cache line) cost a pass over every filter value per call, as much as
// the FMAs a batch-1 7 x 7 or 14 x 14 layer does with it; fastconv.compile still packs them
// once (conv_pointwise_pack + the `wp` argument), with bitwise the same sums.
//
// Stride s > 1: the output columns read every s-th pixel of every s-th row. Two loads and a
// permute per vector would have to be redone by every MR-row filter block (K/MR times per
// element); instead each task gathers its column tile once into a C x TJ buffer (a few
// hundred KB at most, in L2) and every filter block of the task reuses it. Where the
// filters are split into chunks (batch 1-8), every chunk would repeat that gather, so
// the stride grid is copied once into a dense block and the product runs on it as at
// stride 1. Either way the copies are C*TJ against Kt*C*TJ FMAs (Kt >= 64 on every ResNet
// layer). A stride-1 tile's ragged last columns (fewer than a micro-tile) are gathered
// into a small zero-padded buffer too, so the micro-kernel never reads past a row.
//
// Work split: tasks are (image, group, column tile, filter chunk). At batch 1 an image
// alone is one task, so the filters are cut into chunks until there are >= 4 tasks per
// thread: both cores stay busy on one image. The reduction over C is blocked by CB so the
// MR x CB filter block stays in L1 and the CB x TJ activation panel in L2 while every
// filter block of the chunk passes over it; partial sums go through y between C blocks,
// and the last C block applies the output stage (bias, residual, clamp) in its stores.
// Every output element is summed in the same order whatever the thread count or task split,
// so results are bit-identical across thread counts.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <omp.h>

namespace fc {
namespace FC_ISA {

namespace {

// 6 x 2 vectors = 12 accumulators + 2 activation vectors + 1 broadcast of AVX2's 16 ymm.
// The same MR on every ISA keeps a prepacked filter valid whichever ISA path runs it.
constexpr int MR = 6;
constexpr int NV = 2;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Slots: 0 backward-data's transposed filters, 1 a strided pass's dense buffer
// (common/workspace.h).
struct PointwiseScratch;
template <class T>
T* workspace(int slot, size_t n) {
  return thread_workspace<T, PointwiseScratch, 2>(slot, n);
}

template <class T, int NW = NV>
using Acc = typename Simd<T>::V[MR][NW];

// acc[i][t] = sum_{c < cn} w(i, c) * src[c*cs + t*L ...], t < NW vectors, where w(i, c)
// is wp[c*MR + i] (packed panel, wld == 0) or wp[i*wld + c] (filter rows in place).
constexpr int64_t kPrefetchRows = 4;

template <class T, int NW>
inline void micro(int64_t cn, const T* __restrict src, int64_t cs, const T* __restrict wp,
                  int64_t wld, Acc<T, NW>& acc) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int t = 0; t < NW; ++t) acc[i][t] = V{};
  // Element (i, c) at wp + i * ri + c * rc.
  const int64_t ri = wld ? wld : 1, rc = wld ? 1 : MR;
  for (int64_t c = 0; c < cn; ++c) {
    // Each step reads a new activation row (cs apart): fetching kPrefetchRows ahead
    // measured 5-20% faster on ResNet-50's 1x1 layers at batch 1 (prepacked filters;
    // 2 to 8 rows help, 4 most; a filter-panel prefetch only slowed it).
    __builtin_prefetch(src + (c + kPrefetchRows) * cs);
    V xv[NW];
#pragma GCC unroll 2
    for (int t = 0; t < NW; ++t) xv[t] = S::load(src + c * cs + t * L);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const V wv = S::splat(wp[i * ri + c * rc]);
#pragma GCC unroll 2
      for (int t = 0; t < NW; ++t) acc[i][t] += wv * xv[t];
    }
  }
}

// Stores kv rows x ncols columns of acc at y (row stride ys). Not the first C block: adds
// what y holds. The last C block: the output stage (bias[k], residual at the same offset
// from res as from y, clamp), applied in the store.
template <class T, int NW>
inline void store(Acc<T, NW>& acc, int kv, int64_t ncols, T* y, int64_t ys, bool first, bool last,
                  const T* bias, const T* res, T lo, T hi, bool clamp) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  if (ncols == NW * L) {
    for (int i = 0; i < kv; ++i) {
      T* yr = y + i * ys;
      const T* rr = res ? res + i * ys : nullptr;
      const V b = S::splat(bias && last ? bias[i] : T(0));
      const V vlo = S::splat(lo), vhi = S::splat(hi);
#pragma GCC unroll 2
      for (int t = 0; t < NW; ++t) {
        V v = acc[i][t];
        if (!first) v += S::load(yr + t * L);
        if (last) {
          if (bias) v += b;
          if (rr) v += S::load(rr + t * L);
          if (clamp) {
            v = v < vlo ? vlo : v;  // NaN passes both, as Epilogue::act
            v = v > vhi ? vhi : v;
          }
        }
        S::store(yr + t * L, v);
      }
    }
    return;
  }
  T tmp[NW * Simd<T>::L];
  for (int i = 0; i < kv; ++i) {
    T* yr = y + i * ys;
    const T* rr = res ? res + i * ys : nullptr;
    for (int t = 0; t < NW; ++t) S::store(tmp + t * L, acc[i][t]);
    for (int64_t u = 0; u < ncols; ++u) {
      T v = tmp[u];
      if (!first) v += yr[u];
      if (last) {
        if (bias) v += bias[i];
        if (rr) v += rr[u];
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
      }
      yr[u] = v;
    }
  }
}

// Geometry of one forward-form problem: Y[k][j] = sum_c A[k][c] B[c][j'] per image/group.
struct Geo {
  int64_t N, G, Cg, Kg, PQ;
  int64_t H, W, Q, sh, sw;  // B's plane (H x W) and the output grid (Q wide, stride sh, sw)
  int64_t x_ns, x_gs;       // B strides: per image, per group (elements)
  int64_t y_ns, y_gs;
  bool dense;  // the output grid is B's whole plane (stride 1, P = H, Q = W): read rows of B
};

template <class T>
constexpr int64_t col_block() { return NV * Simd<T>::L; }

// Packs A (element a(g, k, c)) to [g][kb][c][MR], zeros past Kg.
template <class T, class AFn>
void pack_a(int64_t G, int64_t Kg, int64_t Cg, AFn a, T* wp) {
  const int64_t KB = ceil_div(Kg, MR);
#pragma omp parallel for schedule(static) num_threads(threads_for(G * KB, MR * Cg * 4))
  for (int64_t gk = 0; gk < G * KB; ++gk) {
    const int64_t g = gk / KB, kb = gk % KB;
    T* d = wp + gk * Cg * MR;
    for (int64_t c = 0; c < Cg; ++c)
      for (int i = 0; i < MR; ++i) {
        const int64_t k = kb * MR + i;
        d[c * MR + i] = k < Kg ? a(g, k, c) : T(0);
      }
  }
}

// Copies columns [j0, j0 + jn) of B's strided output grid, channels [0, Cg), to
// buf[c][0..jw) with zeros from jn to jw.
template <class T>
void gather(const Geo& g, const T* xb, int64_t j0, int64_t jn, int64_t jw, T* buf) {
  for (int64_t c = 0; c < g.Cg; ++c) {
    const T* xc = xb + c * g.H * g.W;
    T* d = buf + c * jw;
    int64_t p = j0 / g.Q, q = j0 % g.Q;
    for (int64_t u = 0; u < jn; ++u) {
      d[u] = xc[p * g.sh * g.W + q * g.sw];
      if (++q == g.Q) { q = 0; ++p; }
    }
    std::fill(d + jn, d + jw, T(0));
  }
}

// The forward-form product for all images and groups, with ep's stage fused. The filters
// are wp (packed by pack_a) or, with wp null, the rows of w read in place (row (g, k) at
// w + (g*Kg + k)*Cg): packing costs a pass over every filter value per call, which one
// image's 7 x 7 or 14 x 14 columns reuse only a few times. A ragged last filter block
// (fewer than MR rows) is then packed per task, zero-padded, so no row past Kg is read.
template <class T>
void product(const Geo& g, const T* x, const T* wp, const T* w, const Epilogue<T>& ep, T* y) {
  constexpr int64_t JW = col_block<T>();
  // 8 micro-tiles per column tile: 128 fp32 columns, the activation panel CB x TJ ~128 KB.
  // CB 64 / 128 and TJ 4 micro-tiles measured no better (1 thread, CPU time, on the 1x1
  // layers of ResNet-50 at batch 1 and 8).
  const int64_t TJ = std::min<int64_t>(ceil_div(g.PQ, JW) * JW, 8 * JW);
  const int64_t CB = 256;
  const int64_t KB = ceil_div(g.Kg, MR);
  const int64_t JT = ceil_div(g.PQ, TJ);
  const int nth = num_threads();
  const int64_t units = g.N * g.G * JT;
  // Filter chunks: enough tasks for every thread (4 per thread evens out the tails), but
  // chunks of >= 2 blocks so a strided tile's gather is shared by >= 12 filters.
  int64_t KT = 1;
  if (units < 4 * nth) KT = std::min<int64_t>(std::max<int64_t>(1, KB / 2), ceil_div(4 * nth, units));
  if (!g.dense && KT > 1) {
    // Strided, with the filters split into chunks (few images): every chunk would gather
    // the same column tile again, so the stride grid is copied once into a dense
    // N x G x Cg x P x Q block and the stride-1 product runs on it. With one chunk per
    // tile the per-task gather (into a buffer that stays in L2) is cheaper than the copy.
    const int64_t blocks = g.N * g.G, block = g.Cg * g.PQ;
    T* xd = workspace<T>(1, size_t(blocks * block));
#pragma omp parallel for schedule(static) num_threads(threads_for(blocks, block))
    for (int64_t ng = 0; ng < blocks; ++ng)
      gather(g, x + ng / g.G * g.x_ns + ng % g.G * g.x_gs, 0, g.PQ, g.PQ, xd + ng * block);
    Geo gd = g;
    gd.H = g.PQ / g.Q; gd.W = g.Q; gd.sh = gd.sw = 1; gd.dense = true;
    gd.x_ns = g.G * g.Cg * g.PQ; gd.x_gs = g.Cg * g.PQ;
    return product<T>(gd, xd, wp, w, ep, y);
  }
  const int64_t tasks = units * KT;
  const bool clamp = ep.clamps();
  const bool strided = !g.dense;
  const int64_t flops_per_task = 2 * g.Kg / KT * g.Cg * TJ;
#pragma omp parallel num_threads(threads_for(tasks, flops_per_task))
  {
    thread_local std::vector<T> bufv, ragged;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t kt = task % KT, u = task / KT;
      const int64_t jt = u % JT, ng = u / JT, gi = ng % g.G, n = ng / g.G;
      const int64_t kb0 = KB * kt / KT, kb1 = KB * (kt + 1) / KT;
      const int64_t j0 = jt * TJ, jn = std::min(TJ, g.PQ - j0);
      const T* xb = x + n * g.x_ns + gi * g.x_gs;
      T* yb = y + n * g.y_ns + gi * g.y_gs;
      const T* rb = ep.residual ? ep.residual + n * g.y_ns + gi * g.y_gs : nullptr;
      const T* bb = ep.bias ? ep.bias + gi * g.Kg : nullptr;
      // Columns read straight from x: whole micro-tiles of a stride-1 grid. The rest (all
      // of a strided tile; a stride-1 tile's ragged end) come from the gathered buffer.
      const int64_t jdir = strided ? 0 : (jn / JW) * JW;
      const int64_t jrest = jn - jdir, jw = ceil_div(jrest, JW) * JW;
      T* buf = nullptr;
      if (jrest > 0) {
        buf = scratch(bufv, size_t(g.Cg * jw));
        gather(g, xb, j0 + jdir, jrest, jw, buf);
      }
      const T* wr = nullptr;  // the ragged block's packed copy (in-place filters only)
      if (!wp && kb1 == KB && g.Kg % MR) {
        wr = scratch(ragged, size_t(g.Cg * MR));
        const T* src = w + (gi * g.Kg + (KB - 1) * MR) * g.Cg;
        const int64_t kr = g.Kg % MR;
        for (int64_t c = 0; c < g.Cg; ++c)
          for (int i = 0; i < MR; ++i) ragged[c * MR + i] = i < kr ? src[i * g.Cg + c] : T(0);
      }
      for (int64_t c0 = 0; c0 < g.Cg; c0 += CB) {
        const int64_t cn = std::min(CB, g.Cg - c0);
        const bool first = c0 == 0, last = c0 + cn == g.Cg;
        for (int64_t kb = kb0; kb < kb1; ++kb) {
          const int kv = int(std::min<int64_t>(MR, g.Kg - kb * MR));
          const bool rows = !wp && kv == MR;
          const T* wk = wp ? wp + ((gi * KB + kb) * g.Cg + c0) * MR
                      : rows ? w + (gi * g.Kg + kb * MR) * g.Cg + c0 : wr + c0 * MR;
          const int64_t wld = rows ? g.Cg : 0;
          const int64_t k0 = kb * MR;
          for (int64_t jj = 0; jj < jn; jj += JW) {
            const int64_t j = j0 + jj, nc = std::min(JW, jn - jj);
            T* yt = yb + k0 * g.PQ + j;
            const T* bt = bb ? bb + k0 : nullptr;
            const T* rt = rb ? rb + k0 * g.PQ + j : nullptr;
            if (jj < jdir) {
              Acc<T> acc;
              micro<T, NV>(cn, xb + c0 * g.PQ + j, g.PQ, wk, wld, acc);
              store<T, NV>(acc, kv, nc, yt, g.PQ, first, last, bt, rt, ep.lo, ep.hi, clamp);
            } else if (nc <= Simd<T>::L) {
              // A last tile of at most one vector (7 x 7 planes: 49 = 3 x 16 + 1) costs
              // half a full one.
              Acc<T, 1> acc;
              micro<T, 1>(cn, buf + c0 * jw + (jj - jdir), jw, wk, wld, acc);
              store<T, 1>(acc, kv, nc, yt, g.PQ, first, last, bt, rt, ep.lo, ep.hi, clamp);
            } else {
              Acc<T> acc;
              micro<T, NV>(cn, buf + c0 * jw + (jj - jdir), jw, wk, wld, acc);
              store<T, NV>(acc, kv, nc, yt, g.PQ, first, last, bt, rt, ep.lo, ep.hi, clamp);
            }
          }
        }
      }
    }
  }
}

template <class T>
Geo fwd_geo(const ConvShape& s) {
  Geo g;
  g.N = s.N; g.G = s.groups; g.Cg = s.Cg(); g.Kg = s.Kg(); g.PQ = s.P * s.Q;
  g.H = s.H; g.W = s.W; g.Q = s.Q; g.sh = s.sh; g.sw = s.sw;
  g.x_ns = s.C * s.H * s.W; g.x_gs = g.Cg * s.H * s.W;
  g.y_ns = s.K * g.PQ; g.y_gs = g.Kg * g.PQ;
  g.dense = s.sh == 1 && s.sw == 1 && s.P == s.H && s.Q == s.W;
  return g;
}

}  // namespace

bool pointwise_serves(const ConvShape& s) {
  return s.R == 1 && s.S == 1 && s.ph == 0 && s.pw == 0 && s.P >= 1 && s.Q >= 1 &&
         (s.P - 1) * s.sh <= s.H - 1 && (s.Q - 1) * s.sw <= s.W - 1;
}

int64_t conv_pointwise_packed_size(const ConvShape& s) {
  return s.groups * ceil_div(s.Kg(), MR) * MR * s.Cg();
}

template <class T>
void conv_pointwise_pack(const ConvShape& s, const T* w, T* wp) {
  const int64_t Kg = s.Kg(), Cg = s.Cg();
  pack_a<T>(s.groups, Kg, Cg, [w, Kg, Cg](int64_t g, int64_t k, int64_t c) {
    return w[(g * Kg + k) * Cg + c];
  }, wp);
}

template <class T>
void conv_pointwise_fwd(const ConvShape& s, const T* x, const T* w, const T* wp,
                        const Epilogue<T>& ep, T* y) {
  if (s.N == 0 || s.K == 0 || s.P == 0 || s.Q == 0) return;
  if (s.C == 0) {  // an empty reduction: the output stage of zero
    for (int64_t i = 0, PQ = s.P * s.Q; i < s.N * s.K * PQ; ++i) y[i] = ep.apply(T(0), (i / PQ) % s.K, i);
    return;
  }
  product<T>(fwd_geo<T>(s), x, wp, w, ep, y);
}

template <class T>
void conv_pointwise_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  if (s.N == 0 || s.C == 0 || s.H == 0 || s.W == 0) return;
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q, Cg = s.Cg(), Kg = s.Kg();
  if (s.K == 0) {
    std::fill(gx, gx + s.N * s.C * HW, T(0));
    return;
  }
  // The forward form with the roles swapped: rows are input channels, the reduction runs
  // over filters, the "activation" is grad_out read in place.
  Geo g;
  g.N = s.N; g.G = s.groups; g.Cg = Kg; g.Kg = Cg; g.PQ = PQ;
  g.H = s.P; g.W = s.Q; g.Q = s.Q; g.sh = 1; g.sw = 1; g.dense = true;
  g.x_ns = s.K * PQ; g.x_gs = Kg * PQ;
  g.y_ns = s.C * PQ; g.y_gs = Cg * PQ;
  T* wt = workspace<T>(0, size_t(s.groups * ceil_div(Cg, MR) * MR * Kg));
  pack_a<T>(s.groups, Cg, Kg, [w, Kg, Cg](int64_t gi, int64_t c, int64_t k) {
    return w[(gi * Kg + k) * Cg + c];
  }, wt);
  const Epilogue<T> none;
  if (s.sh == 1 && s.sw == 1 && s.P == s.H && s.Q == s.W) {
    product<T>(g, gy, wt, nullptr, none, gx);
    return;
  }
  // Strided: the product lands on the stride grid; every other pixel gets no gradient.
  T* dense = workspace<T>(1, size_t(s.N * s.C * PQ));
  product<T>(g, gy, wt, nullptr, none, dense);
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, HW))
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* d = gx + pl * HW;
    const T* src = dense + pl * PQ;
    std::fill(d, d + HW, T(0));
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) d[p * s.sh * s.W + q * s.sw] = src[p * s.Q + q];
  }
}

namespace {
// out[i][t] = sum_n sum_j gy[i][n][j] * xs[t][n][j] over a KW x CW block.
template <class T, int KW, int CW>
void wgrad_block(int64_t N, int64_t len, const T* const* g, int64_t g_ns, const T* const* xr,
                 int64_t x_ns, T* out) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  V acc[KW][CW];
  for (int i = 0; i < KW; ++i)
    for (int t = 0; t < CW; ++t) acc[i][t] = V{};
  T tail[KW][CW] = {};
  const int64_t lv = len / L * L;
  for (int64_t n = 0; n < N; ++n) {
    const T* gn[KW];
    const T* xn[CW];
    for (int i = 0; i < KW; ++i) gn[i] = g[i] + n * g_ns;
    for (int t = 0; t < CW; ++t) xn[t] = xr[t] + n * x_ns;
    for (int64_t j = 0; j < lv; j += L) {
      V xv[CW];
#pragma GCC unroll 4
      for (int t = 0; t < CW; ++t) xv[t] = S::load(xn[t] + j);
#pragma GCC unroll 4
      for (int i = 0; i < KW; ++i) {
        const V gv = S::load(gn[i] + j);
#pragma GCC unroll 4
        for (int t = 0; t < CW; ++t) acc[i][t] += gv * xv[t];
      }
    }
    for (int64_t j = lv; j < len; ++j)
      for (int i = 0; i < KW; ++i)
        for (int t = 0; t < CW; ++t) tail[i][t] += gn[i][j] * xn[t][j];
  }
  for (int i = 0; i < KW; ++i)
    for (int t = 0; t < CW; ++t) {
      T sum = tail[i][t];
      for (int l = 0; l < L; ++l) sum += acc[i][t][l];
      out[i * CW + t] = sum;
    }
}
}  // namespace

template <class T>
void conv_pointwise_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, PQ = s.P * s.Q, HW = s.H * s.W;
  if (s.N == 0 || PQ == 0) {
    std::fill(gw, gw + s.K * Cg, T(0));
    return;
  }
  // The reduction runs over pixels, contiguous in both grad_out and x (stride 1), so the
  // block is an inner product: KW x CW vector accumulators, one horizontal sum at the end.
  // A strided x is first compacted to its stride grid (a quarter of x at stride 2; the
  // backward pass has no activation-packing budget to keep).
  const T* xs = x;
  int64_t x_ns = s.C * HW;
  if (!(s.sh == 1 && s.sw == 1 && s.P == s.H && s.Q == s.W)) {
    T* d = workspace<T>(1, size_t(s.N * s.C * PQ));
    const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, PQ))
    for (int64_t pl = 0; pl < planes; ++pl)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q)
          d[pl * PQ + p * s.Q + q] = x[pl * HW + p * s.sh * s.W + q * s.sw];
    xs = d;
    x_ns = s.C * PQ;
  }
  constexpr int KW = 4, CW = 3;
  const int64_t KBn = ceil_div(Kg, KW), CBn = ceil_div(Cg, CW);
  const int64_t tasks = G * KBn * CBn;
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads_for(tasks, 2 * KW * CW * s.N * PQ))
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t cb = task % CBn, gk = task / CBn, kb = gk % KBn, gi = gk / KBn;
    const int64_t k0 = kb * KW, kv = std::min<int64_t>(KW, Kg - k0);
    const int64_t c0 = cb * CW, cv = std::min<int64_t>(CW, Cg - c0);
    const T* gr[KW];
    const T* xr[CW];
    // Rows past the edge repeat the last real one; their sums are not stored.
    for (int i = 0; i < KW; ++i) gr[i] = gy + (gi * Kg + k0 + std::min<int64_t>(i, kv - 1)) * PQ;
    for (int t = 0; t < CW; ++t) xr[t] = xs + (gi * Cg + c0 + std::min<int64_t>(t, cv - 1)) * PQ;
    T out[KW * CW];
    wgrad_block<T, KW, CW>(s.N, PQ, gr, s.K * PQ, xr, x_ns, out);
    for (int64_t i = 0; i < kv; ++i)
      for (int64_t t = 0; t < cv; ++t) gw[(gi * Kg + k0 + i) * Cg + c0 + t] = out[i * CW + t];
  }
}

#define FC_INSTANTIATE(T)                                                                      \
  template void conv_pointwise_pack<T>(const ConvShape&, const T*, T*);                        \
  template void conv_pointwise_fwd<T>(const ConvShape&, const T*, const T*, const T*,          \
                                      const Epilogue<T>&, T*);                                 \
  template void conv_pointwise_bwd_data<T>(const ConvShape&, const T*, const T*, T*);          \
  template void conv_pointwise_bwd_weight<T>(const ConvShape&, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
