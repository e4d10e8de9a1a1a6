// Direct convolution, forward / backward-data / backward-weight, any stride, padding,
// dilation and groups, register-blocked and vectorised.
//
// Every pass is written as a "tap list" correlation over a padded source:
//
//   out[k][j] = sum_c sum_t  src[c][off_t + j] * w[k][c][t]
//
// where j = p * PW + q runs over a "wide" output grid whose row stride PW is the source's
// row stride (columns q >= Q are computed and thrown away). With that layout every tap is
// one contiguous vector load at a fixed offset, whatever the stride or dilation:
//   - forward: src is x, zero-padded and split into sh x sw phases (phase (a, b) holds the
//     input pixels (i*sh + a - ph, j*sw + b - pw)), so tap (r, s) reads phase
//     (r*dh % sh, s*dw % sw) at offset (r*dh / sh, s*dw / sw);
//   - backward-data: src is grad_out, zero-padded; each output phase (h % sh, w % sw) of
//     grad_x is a stride-1 correlation with the taps that land on it (no zero-stuffing);
//   - backward-weight (few filters per group): gw[k][c][t] = sum_j gy_wide[k][j] *
//     src_fwd[c][off_t + j], with the thrown-away columns of gy_wide set to zero. With
//     enough filters per group it is instead an outer product over channels-last copies
//     of gy and x (bwd_weight_nhwc below), which has neither horizontal sums nor wasted
//     columns and balances loads against FMAs far better.
// The micro-kernel keeps MR output channels x NR vectors of j in registers across the
// whole C x taps reduction; weights are packed [kb][c][tap][MR] so the broadcasts stream.
//
// The wide grid wastes (PW - Q) / PW of the work plus the rounding of P*PW to whole
// vectors: a quarter on 7 x 7 images. Where a group has enough filters for the vector
// tile (prefer_nhwc: every ResNet 3x3 layer and the stem), the forward and the stride-1
// backward-data use a channels-last kernel instead (fwd_nhwc: a tile of consecutive
// output pixels x vectors of filters, no padding columns), over a phase-split
// channels-last copy of the source.
#include "cpu/kernel_common.h"
#include "cpu/simd.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <omp.h>
#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2)
#include <immintrin.h>
#endif

namespace fc {
namespace FC_ISA {

namespace {

#if defined(FC_ISA_avx512)
constexpr int MR = 8;  // 16 accumulators of 32 zmm
#elif defined(FC_ISA_avx2)
constexpr int MR = 6;  // 12 accumulators of 16 ymm
#else
constexpr int MR = 6;
#endif
constexpr int NR = 2;

// Slots: 0 the padded / channels-last source, 1 the packed filters (common/workspace.h).
struct DirectScratch;
template <class T>
T* workspace(int slot, size_t n) {
  return thread_workspace<T, DirectScratch, 2>(slot, n);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// acc[MR][NR*L] = sum_c sum_t src[c*cs + off[t] + j] * wp[(c*nt + t)*MR + i]
template <class T>
inline void micro(int64_t C, int nt, const int64_t* __restrict off, const T* __restrict src,
                  int64_t cs, const T* __restrict wp, T* __restrict out) {
  using S = Simd<T>;
  using V = typename S::V;
  V acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NR; ++j) acc[i][j] = V{};
  for (int64_t c = 0; c < C; ++c) {
    const T* sc = src + c * cs;
    for (int t = 0; t < nt; ++t, wp += MR) {
      V b[NR];
#pragma GCC unroll 2
      for (int j = 0; j < NR; ++j) b[j] = S::load(sc + off[t] + j * S::L);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const V u = S::splat(wp[i]);
#pragma GCC unroll 2
        for (int j = 0; j < NR; ++j) acc[i][j] += u * b[j];
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NR; ++j) S::store(out + i * NR * S::L + j * S::L, acc[i][j]);
}

// One tap-list correlation problem for one image and group (see the file comment).
template <class T>
struct TapConv {
  int64_t Kc, Cc;          // output / input channels of the problem
  int64_t Po, Qo, PW;      // valid output grid, wide row stride
  int64_t cs;              // source channel stride
  std::vector<int64_t> off;
  std::vector<T> wp;       // [kb][c][tap][MR]
  // pack(k, c, t) -> weight
  template <class F>
  void pack(F wfn) {
    const int64_t KB = ceil_div(Kc, MR), nt = static_cast<int64_t>(off.size());
    wp.assign(size_t(KB) * Cc * nt * MR, T(0));
    // Filters innermost: contiguous MR-runs of writes, and reads that walk MR source lines
    // kept cached across channels and taps, both for the forward's [k][c][tap] and for
    // backward-data's transposed view (k outermost read one line per element there).
#pragma omp parallel for schedule(static) num_threads(threads_for(KB, Cc * nt * MR * 4))
    for (int64_t kb = 0; kb < KB; ++kb) {
      const int64_t kv = std::min<int64_t>(MR, Kc - kb * MR);
      for (int64_t c = 0; c < Cc; ++c)
        for (int64_t t = 0; t < nt; ++t) {
          T* d = wp.data() + ((kb * Cc + c) * nt + t) * MR;
          for (int64_t i = 0; i < kv; ++i) d[i] = wfn(kb * MR + i, c, t);
        }
    }
  }
  int64_t jblocks() const { return ceil_div(Po * PW, NR * Simd<T>::L); }
  // Computes j-block jb for filter block kb and hands each valid output to put(k, p, q, v).
  template <class Put>
  void run(int64_t kb, int64_t jb, const T* src, T* tmp, Put put) const {
    constexpr int JB = NR * Simd<T>::L;
    const int nt = static_cast<int>(off.size());
    const int64_t j0 = jb * JB;
    micro<T>(Cc, nt, off.data(), src + j0, cs, wp.data() + kb * Cc * nt * MR, tmp);
    const int64_t kv = std::min<int64_t>(MR, Kc - kb * MR);
    const int64_t j1 = std::min(j0 + JB, Po * PW);
    for (int64_t j = j0; j < j1;) {
      const int64_t p = j / PW, q = j % PW;
      const int64_t run_end = std::min(j1, p * PW + Qo);  // valid columns of this row
      if (q >= Qo) {
        j = (p + 1) * PW;
        continue;
      }
      for (int64_t i = 0; i < kv; ++i) put(kb * MR + i, p, q, tmp + i * JB + (j - j0), run_end - j);
      j = (p + 1) * PW;
    }
  }
};

// Source plane size with slack: the last j-block may read JB past the grid, plus the
// largest tap offset (inside the plane by construction).
template <class T>
int64_t plane_len(int64_t rows, int64_t PW) {
  return (rows + 1) * PW + 2 * NR * Simd<T>::L;
}

// The phases some tap reads: row phases r*dh % sh and column phases t*dw % sw, each
// listed once; every (row phase, column phase) pair is read by some tap, and only those
// pairs are stored, so the source is at most R*S planes whatever the stride (a table of
// all sh*sw phases would take stride^2 memory, and overflow at stride 2^32).
struct Phases {
  std::vector<int64_t> rows, cols;  // distinct phase values
  std::vector<int64_t> ri, ci;      // filter row r -> index into rows; column t -> cols

  static void distinct(int64_t n, int64_t d, int64_t st, std::vector<int64_t>& vals,
                       std::vector<int64_t>& idx) {
    for (int64_t r = 0; r < n; ++r) {
      const int64_t v = r * d % st;
      const auto it = std::find(vals.begin(), vals.end(), v);
      idx.push_back(it - vals.begin());
      if (it == vals.end()) vals.push_back(v);
    }
  }
  explicit Phases(const ConvShape& s) {
    distinct(s.R, s.dh, s.sh, rows, ri);
    distinct(s.S, s.dw, s.sw, cols, ci);
  }
  int64_t count() const { return static_cast<int64_t>(rows.size() * cols.size()); }
  // Stored plane of the phase tap (r, t) reads.
  int64_t slot(int64_t r, int64_t t) const { return ri[r] * static_cast<int64_t>(cols.size()) + ci[t]; }
  // Row / column phase of stored plane i.
  int64_t row_of(int64_t i) const { return rows[i / static_cast<int64_t>(cols.size())]; }
  int64_t col_of(int64_t i) const { return cols[i % static_cast<int64_t>(cols.size())]; }
};

// Forward source layout: for each (n, c): the read phases' (Hs x PW) planes.
struct FwdGeom {
  int64_t Hs, PW, PL, cs;
};

template <class T>
FwdGeom fwd_geom(const ConvShape& s) {
  FwdGeom g;
  g.Hs = s.P + (s.R - 1) * s.dh / s.sh;
  g.PW = s.Q + (s.S - 1) * s.dw / s.sw;
  g.PL = plane_len<T>(g.Hs, g.PW);
  g.cs = Phases(s).count() * g.PL;
  return g;
}

// Builds the padded, phase-split copy of x for all (n, c).
template <class T>
void build_fwd_src(const ConvShape& s, const FwdGeom& g, const T* x, T* src) {
  // Phases no tap reads (1x1 stride 2 reads only phase (0, 0)) are not stored.
  const Phases ph(s);
  const int64_t planes = s.N * s.C, nph = ph.count();
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, g.cs))
  for (int64_t nc = 0; nc < planes; ++nc) {
    const T* xc = x + nc * s.H * s.W;
    T* dc = src + nc * g.cs;
    for (int64_t pi = 0; pi < nph; ++pi) {
        const int64_t a = ph.row_of(pi), b = ph.col_of(pi);
        T* pl = dc + pi * g.PL;
        std::fill(pl, pl + g.PL, T(0));  // padding and the slack past the grid
        // columns j with 0 <= j*sw + b - pw < W
        const int64_t j_lo = std::max<int64_t>(0, ceil_div(s.pw - b, s.sw));
        const int64_t j_hi = std::min<int64_t>(g.PW, floor_div(s.W - 1 + s.pw - b, s.sw) + 1);
        for (int64_t i = 0; i < g.Hs; ++i) {
          const int64_t h = i * s.sh + a - s.ph;
          if (h < 0 || h >= s.H || j_hi <= j_lo) continue;
          const T* xr = xc + h * s.W + b - s.pw;
          T* dr = pl + i * g.PW;
          if (s.sw == 1) {
            std::memcpy(dr + j_lo, xr + j_lo, sizeof(T) * (j_hi - j_lo));
          } else if (s.sw == 2) {  // constant stride: the compiler vectorises the gather
            for (int64_t j = j_lo; j < j_hi; ++j) dr[j] = xr[2 * j];
          } else {
            for (int64_t j = j_lo; j < j_hi; ++j) dr[j] = xr[j * s.sw];
          }
        }
      }
  }
}

template <class T>
std::vector<int64_t> fwd_offsets(const ConvShape& s, const FwdGeom& g) {
  const Phases ph(s);
  std::vector<int64_t> off;
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t t = 0; t < s.S; ++t) {
      const int64_t rr = r * s.dh, ss = t * s.dw;
      off.push_back(ph.slot(r, t) * g.PL + (rr / s.sh) * g.PW + ss / s.sw);
    }
  return off;
}

// Thread-private scratch for one micro-kernel output block.
template <class T>
struct Tmp {
  std::vector<T> v;
  Tmp() : v(size_t(MR) * NR * Simd<T>::L) {}
};

}  // namespace

namespace {
// Channels-last weight gradient. With gy as [g][n][p][q][k] (k padded to the tile) and x
// as [g][n][h][w][c] (zero-padded), a filter row r reads, for each output pixel, the
// S*Cg values x[h][w .. w+S-1][0 .. Cg-1] as ONE contiguous run of "columns"
// j = s*Cg + c (dilation 1). The micro-kernel is then an outer product: KV vectors of
// k (one gy load per vector) times NC broadcast columns, summed over the pixels, with no
// horizontal reductions and no thrown-away columns; it reaches the FMA:load balance the
// inner-product kernel above cannot (2 + NC loads per 2*NC FMAs instead of KW + NT per
// KW*NT).
#if defined(FC_ISA_avx512)
constexpr int WNC2 = 12, WNC1 = 24;  // 24 accumulators of 32 zmm
#else
constexpr int WNC2 = 6, WNC1 = 12;  // 12 of 16
#endif

struct WGeo {
  int64_t P, Q, Kp;    // gy tile layout, per group: [n][P][Q][Kp]
  int64_t xn, xp, xq;  // x strides (elements) per image, per output row, per output column
};

// acc[j][v*L + l] += sum over pixel rows [rr0, rr1) (row rr = n*P + p) of
// x[col j of the pixel] * gy[pixel][v*L + l]; acc is in memory between calls so a task
// can revisit it chunk by chunk.
template <class T, int KV, int NC>
void wgrad_tile(const WGeo& g, int64_t rr0, int64_t rr1, const T* __restrict gyk,
                const T* __restrict xc, T* __restrict acc) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  V a[NC][KV];
#pragma GCC unroll 24
  for (int j = 0; j < NC; ++j)
#pragma GCC unroll 2
    for (int v = 0; v < KV; ++v) a[j][v] = S::load(acc + (j * KV + v) * L);
  int64_t n = rr0 / g.P, p = rr0 % g.P;
  for (int64_t rr = rr0; rr < rr1; ++rr) {
    const T* gp = gyk + rr * g.Q * g.Kp;
    const T* xp = xc + n * g.xn + p * g.xp;
    for (int64_t q = 0; q < g.Q; ++q, gp += g.Kp, xp += g.xq) {
      V gv[KV];
#pragma GCC unroll 2
      for (int v = 0; v < KV; ++v) gv[v] = S::load(gp + v * L);
#pragma GCC unroll 24
      for (int j = 0; j < NC; ++j) {
        const V b = S::splat(xp[j]);
#pragma GCC unroll 2
        for (int v = 0; v < KV; ++v) a[j][v] += b * gv[v];
      }
    }
    if (++p == g.P) {
      p = 0;
      ++n;
    }
  }
#pragma GCC unroll 24
  for (int j = 0; j < NC; ++j)
#pragma GCC unroll 2
    for (int v = 0; v < KV; ++v) S::store(acc + (j * KV + v) * L, a[j][v]);
}

// Rounds a workspace pointer up to a cache line so that the k-vector loads of gy never
// straddle two lines.
template <class T>
T* line_aligned(T* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<T*>((u + 63) & ~uintptr_t(63));
}

// d[j * ds + i] = s[i * ss + j * sj] for i < ni, j < nj: 8 x 8 tiles through a
// register-sized buffer (fixed trip counts the compiler unrolls), so each source and
// destination line is touched once per tile instead of once per element.
template <class T>
void transpose(const T* __restrict s, int64_t ss, int64_t sj, int64_t ni, int64_t nj,
               T* __restrict d, int64_t ds) {
  constexpr int B = 8;
  int64_t i0 = 0;
  for (; i0 + B <= ni; i0 += B) {
    int64_t j0 = 0;
    for (; j0 + B <= nj; j0 += B) {
      T buf[B][B];
#pragma GCC unroll 8
      for (int i = 0; i < B; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < B; ++j) buf[j][i] = s[(i0 + i) * ss + (j0 + j) * sj];
#pragma GCC unroll 8
      for (int j = 0; j < B; ++j) std::memcpy(d + (j0 + j) * ds + i0, buf[j], sizeof(buf[j]));
    }
    for (int64_t j = j0; j < nj; ++j)
      for (int64_t i = i0; i < i0 + B; ++i) d[j * ds + i] = s[i * ss + j * sj];
  }
  for (int64_t j = 0; j < nj; ++j)
    for (int64_t i = i0; i < ni; ++i) d[j * ds + i] = s[i * ss + j * sj];
}

// Channels-last, zero-padded, phase-split copy of x per group and image:
// [g][n][phase][Hq][Wq][Cg], phase (a, b) holding the input pixels
// (i*sh + a - ph, j*sw + b - pw) as in the wide-row forward. Tap (r, s) reads phase
// (r*dh % sh, s*dw % sw) at row / column offset (r*dh / sh, s*dw / sw), so consecutive
// output pixels are consecutive pixels of every phase whatever the stride (a strided
// walk through a full-resolution copy costs ~1.6x at stride 2). Only the phases some
// tap reads are stored (1x1 stride 2 reads only (0, 0)).
struct XGeo {
  int64_t Hq, Wq, plane, img;  // phase grid, elements per phase and per image
  Phases ph;                   // the stored phases (those some tap reads)
};

inline XGeo x_geo(const ConvShape& s) {
  XGeo g{0, 0, 0, 0, Phases(s)};
  g.Hq = s.P + (s.R - 1) * s.dh / s.sh;
  g.Wq = s.Q + (s.S - 1) * s.dw / s.sw;
  g.plane = g.Hq * g.Wq * s.Cg();
  g.img = g.ph.count() * g.plane;
  return g;
}

template <class T>
void build_x_nhwc(const ConvShape& s, const XGeo& xg, const T* x, T* xt) {
  const int64_t N = s.N, G = s.groups, Cg = s.Cg(), Hq = xg.Hq, Wq = xg.Wq;
  const int64_t nph = xg.ph.count();
  const int64_t x_rows = G * N * nph * Hq;
#pragma omp parallel for schedule(static) num_threads(threads_for(x_rows, Wq * Cg))
  for (int64_t row = 0; row < x_rows; ++row) {
    const int64_t i = row % Hq, pi = row / Hq % nph, gn = row / (Hq * nph);
    const int64_t a = xg.ph.row_of(pi), b = xg.ph.col_of(pi), n = gn % N, g = gn / N;
    T* d = xt + row * Wq * Cg;
    const int64_t h = i * s.sh + a - s.ph;
    // phase columns j with 0 <= j*sw + b - pw < W
    const int64_t j_lo = std::min(Wq, std::max<int64_t>(0, ceil_div(s.pw - b, s.sw)));
    const int64_t j_hi =
        std::max(j_lo, std::min<int64_t>(Wq, floor_div(s.W - 1 + s.pw - b, s.sw) + 1));
    if (h < 0 || h >= s.H || j_hi <= j_lo) {
      std::fill(d, d + Wq * Cg, T(0));
      continue;
    }
    std::fill(d, d + j_lo * Cg, T(0));
    std::fill(d + j_hi * Cg, d + Wq * Cg, T(0));
    const T* sr = x + ((n * s.C + g * Cg) * s.H + h) * s.W + j_lo * s.sw + b - s.pw;
    transpose(sr, s.H * s.W, s.sw, Cg, j_hi - j_lo, d + j_lo * Cg, Cg);
  }
}

// Column runs over the channels-last x: with horizontal dilation 1, one per (filter row,
// column phase), its taps s = b, b + sw, ... at consecutive phase columns, so the run's
// columns (i*Cg + c for its i-th tap) are contiguous per pixel; else one per tap.
struct Run {
  int64_t off, ncols, tap0, tapstep;  // x offset of column 0, columns, taps tap0 + i*tapstep
};

inline std::vector<Run> col_runs(const ConvShape& s, const XGeo& xg) {
  const int64_t Cg = s.Cg();
  std::vector<Run> runs;
  for (int64_t r = 0; r < s.R; ++r) {
    const int64_t ro = r * s.dh / s.sh;
    if (s.dw == 1) {
      for (int64_t b = 0; b < std::min(s.sw, s.S); ++b) {  // tap b reads column phase b
        const int64_t nt = ceil_div(s.S - b, s.sw);
        runs.push_back({xg.ph.slot(r, b) * xg.plane + ro * xg.Wq * Cg, nt * Cg, r * s.S + b,
                        s.sw});
      }
    } else {
      for (int64_t t = 0; t < s.S; ++t) {
        const int64_t co = t * s.dw / s.sw;
        runs.push_back({xg.ph.slot(r, t) * xg.plane + (ro * xg.Wq + co) * Cg, Cg,
                        r * s.S + t, 1});
      }
    }
  }
  return runs;
}

template <class T, int KV, int NC>
void bwd_weight_nhwc(const ConvShape& s, const T* gy, const T* x, T* gw) {
  constexpr int L = Simd<T>::L, KT = KV * L;
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, RS = s.R * s.S, N = s.N;
  const int64_t P = s.P, Q = s.Q, Kp = ceil_div(Kg, KT) * KT, KTn = Kp / KT;
  const XGeo xg = x_geo(s);
  const int64_t gy_g = N * P * Q * Kp, x_g = N * xg.img;
  T* gyt = line_aligned(workspace<T>(1, size_t(G) * gy_g + 64 / sizeof(T)));
  // Slack: the last column tile of a run reads up to NC - 1 columns past it.
  T* xt = workspace<T>(0, size_t(G) * x_g + NC);
  std::fill(xt + G * x_g, xt + G * x_g + NC, T(0));
  // One transpose per (group, image): [Kg][P*Q] -> [P*Q][Kp] keeps full 8 x 8 tiles even
  // when a row is narrower than a tile (7 x 7 images).
#pragma omp parallel for schedule(static) num_threads(threads_for(G * N, P * Q * Kp))
  for (int64_t gn = 0; gn < G * N; ++gn) {
    const int64_t n = gn % N, g = gn / N;
    T* d = gyt + gn * P * Q * Kp;
    transpose(gy + (n * s.K + g * Kg) * P * Q, P * Q, 1, Kg, P * Q, d, Kp);
    if (Kp > Kg)
      for (int64_t pq = 0; pq < P * Q; ++pq) std::fill(d + pq * Kp + Kg, d + (pq + 1) * Kp, T(0));
  }
  build_x_nhwc(s, xg, x, xt);
  const std::vector<Run> runs = col_runs(s, xg);
  struct Item { int64_t run, j0; };
  std::vector<Item> items;
  for (int64_t e = 0; e < static_cast<int64_t>(runs.size()); ++e)
    for (int64_t j = 0; j < runs[e].ncols; j += NC) items.push_back({e, j});
  const int64_t ni = static_cast<int64_t>(items.size());
  constexpr int64_t IB = 8;  // items per task: 8 accumulator tiles (12 KB at 16 x 2 x 12 floats)
  const int64_t IBn = ceil_div(ni, IB);
  // Pixel rows per chunk: ~256 pixels, so a chunk's gy tile (256 x KT) stays in L1/L2
  // while the task's items pass over it.
  const int64_t chunk = std::max<int64_t>(1, 256 / Q);
  const WGeo geo{P, Q, Kp, xg.img, xg.Wq * Cg, Cg};
  // A task also spans KG k tiles, so that each x column tile, read from far caches on
  // large images, serves all of them; KG shrinks only to keep ~4 tasks per thread. Every
  // gw element is still one task's sum in a fixed order, whatever the thread count.
  const int64_t KG =
      std::max<int64_t>(1, std::min<int64_t>(KTn, G * KTn * IBn / (4 * num_threads())));
  const int64_t KGn = ceil_div(KTn, KG);
  const int64_t tasks = G * KGn * IBn;
#pragma omp parallel num_threads(threads_for(tasks, 2 * KT * NC * IB * KG * N * P * Q))
  {
    std::vector<T> acc(size_t(KG) * IB * NC * KT);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t ib = task % IBn, kg = task / IBn % KGn, g = task / (IBn * KGn);
      const int64_t i0 = ib * IB, i1 = std::min(ni, i0 + IB);
      const int64_t kt0 = kg * KG, kt1 = std::min(KTn, kt0 + KG);
      std::fill(acc.begin(), acc.end(), T(0));
      const T* xg = xt + g * x_g;
      for (int64_t rr = 0; rr < N * P; rr += chunk) {
        const int64_t rr1 = std::min(N * P, rr + chunk);
        for (int64_t kt = kt0; kt < kt1; ++kt)
          for (int64_t i = i0; i < i1; ++i)
            wgrad_tile<T, KV, NC>(geo, rr, rr1, gyt + g * gy_g + kt * KT,
                                  xg + runs[items[i].run].off + items[i].j0,
                                  acc.data() + ((kt - kt0) * IB + i - i0) * NC * KT);
      }
      for (int64_t kt = kt0; kt < kt1; ++kt)
        for (int64_t i = i0; i < i1; ++i) {
          const Run& ru = runs[items[i].run];
          const int64_t jn = std::min<int64_t>(NC, ru.ncols - items[i].j0);
          const T* a = acc.data() + ((kt - kt0) * IB + i - i0) * NC * KT;
          for (int64_t j = 0; j < jn; ++j) {
            const int64_t col = items[i].j0 + j, c = col % Cg;
            const int64_t tap = ru.tap0 + col / Cg * ru.tapstep;
            for (int64_t kk = 0; kk < KT && kt * KT + kk < Kg; ++kk)
              gw[((g * Kg + kt * KT + kk) * Cg + c) * RS + tap] = a[j * KT + kk];
          }
        }
    }
  }
}

// Channels-last forward: a tile of FMP consecutive output pixels of one image (in P x Q
// order, so a tile may wrap onto the next output row) times KV vectors of filters,
// reduced over every run's columns: per column, KV weight-vector loads and FMP
// broadcasts for KV*FMP FMAs. Unlike the wide-row kernel it computes no padding columns,
// which on 7 x 7 and 14 x 14 images are a quarter / an eighth of the wide grid. Each
// pixel has its own source offset (pix[i]), so the tile need not fit in one row.
// FMP * KV accumulators + KV weight vectors + one broadcast must fit the register file:
// AVX2's 16 ymm take 6 x 2 (7 x 2 spilled an accumulator through the stack every
// step, which halved the kernel's speed); AVX-512's 32 zmm take 12 x 2.
#if defined(FC_ISA_avx512)
constexpr int FMP = 12;
#else
constexpr int FMP = 6;
#endif

constexpr int kPrefetchCols = 8;

template <class T, int KV, int MP>
void fwd_tile(int64_t nruns, const Run* runs, const T* xb, const int64_t* pix,
              const T* __restrict wk, T* __restrict out) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L, KT = KV * L;
  V a[MP][KV];
#pragma GCC unroll 16
  for (int i = 0; i < MP; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < KV; ++v) a[i][v] = V{};
  for (int64_t e = 0; e < nruns; ++e) {
    const T* xi[MP];
#pragma GCC unroll 16
    for (int i = 0; i < MP; ++i) xi[i] = xb + runs[e].off + pix[i];
    const int64_t nc = runs[e].ncols;
    for (int64_t j = 0; j < nc; ++j, wk += KT) {
      // The filter panel streams from L2 (up to 4608 x KT values per tile on ResNet's
      // 3x3 layers); fetching kPrefetchCols columns ahead measured 10-30% faster on
      // every ResNet 3x3 layer and the stem, batch 1 and 8 (6 to 16 columns all help).
      __builtin_prefetch(wk + kPrefetchCols * KT);
      V wv[KV];
#pragma GCC unroll 2
      for (int v = 0; v < KV; ++v) wv[v] = S::load(wk + v * L);
#pragma GCC unroll 16
      for (int i = 0; i < MP; ++i) {
        const V b = S::splat(xi[i][j]);
#pragma GCC unroll 2
        for (int v = 0; v < KV; ++v) a[i][v] += b * wv[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MP; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < KV; ++v) S::store(out + i * KT + v * L, a[i][v]);
}

template <class T, int KV, int MP = FMP>
void fwd_tile_n(int mp, int64_t nruns, const Run* runs, const T* xb, const int64_t* pix,
                const T* wk, T* out) {
  if constexpr (MP > 1) {
    if (mp < MP) return fwd_tile_n<T, KV, MP - 1>(mp, nruns, runs, xb, pix, wk, out);
  }
  fwd_tile<T, KV, MP>(nruns, runs, xb, pix, wk, out);
}

// y = ep(conv(x, w)) (bias, residual, clamp: epilogue.h) for the shape s (any stride, dilation, groups), with the filters
// read through wfn(g, k, c, tap) so that backward-data can pass its flipped, transposed
// view. Results do not depend on the thread count: each output is one tile's sum.
// Packed filters of the channels-last forward: [g][kt][run][column][KT], zero past Kg.
template <class T, int KV>
int64_t nhwc_packed_len(const ConvShape& s) {
  constexpr int KT = KV * Simd<T>::L;
  return s.groups * ceil_div(s.Kg(), KT) * KT * s.R * s.S * s.Cg();
}

// tapcol[t]: the packed column of (c = 0, tap t); channel c of that tap is column
// tapcol[t] + c.
inline std::vector<int64_t> tap_columns(const ConvShape& s, const std::vector<Run>& runs) {
  std::vector<int64_t> tapcol(s.R * s.S);
  int64_t base = 0;
  for (const Run& ru : runs) {
    for (int64_t i = 0; i < ru.ncols / s.Cg(); ++i) tapcol[ru.tap0 + i * ru.tapstep] = base + i * s.Cg();
    base += ru.ncols;
  }
  return tapcol;
}

// Packs filter block kt of group g (ncol x KT values, zero past Kg) to d.
template <class T, int KV, class WFn>
void pack_nhwc_block(const ConvShape& s, WFn wfn, const int64_t* tapcol, int64_t g, int64_t kt,
                     T* d) {
  constexpr int KT = KV * Simd<T>::L;
  const int64_t Cg = s.Cg(), RS = s.R * s.S;
  const int64_t kv = std::min<int64_t>(KT, s.Kg() - kt * KT);
  if (kv < KT) std::fill(d, d + RS * Cg * KT, T(0));
  // Filters innermost: each packed column is one contiguous KT-run of writes, and the
  // reads walk kv source lines that stay cached across the taps and channels, for the
  // forward's [k][c][tap] and backward-data's transposed view alike.
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t t = 0; t < RS; ++t) {
      T* dc = d + (tapcol[t] + c) * KT;
      for (int64_t kk = 0; kk < kv; ++kk) dc[kk] = wfn(g, kt * KT + kk, c, t);
    }
}

// Fills wp (nhwc_packed_len elements) from wfn(g, k, c, tap).
template <class T, int KV, class WFn>
void pack_nhwc(const ConvShape& s, WFn wfn, T* wp) {
  constexpr int KT = KV * Simd<T>::L;
  const int64_t Kg = s.Kg(), G = s.groups, ncol = s.R * s.S * s.Cg();
  const int64_t KTn = ceil_div(Kg, KT);
  const std::vector<int64_t> tapcol = tap_columns(s, col_runs(s, x_geo(s)));
#pragma omp parallel for schedule(static) num_threads(threads_for(G * KTn, KT * ncol))
  for (int64_t gk = 0; gk < G * KTn; ++gk)
    pack_nhwc_block<T, KV>(s, wfn, tapcol.data(), gk / KTn, gk % KTn, wp + gk * ncol * KT);
}

// With `pre` (conv_direct_pack's panels, fastconv.compile) the filters are not packed
// again: at batch 1 on a 7 x 7 plane that pass over every filter value costs about as
// much as the convolution.
template <class T, int KV, class WFn>
void fwd_nhwc(const ConvShape& s, const T* x, WFn wfn, const Epilogue<T>& ep, T* y,
              const T* pre = nullptr) {
  constexpr int L = Simd<T>::L, KT = KV * L;
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, RS = s.R * s.S, N = s.N;
  const int64_t P = s.P, Q = s.Q, Kp = ceil_div(Kg, KT) * KT, KTn = Kp / KT;
  const XGeo xg = x_geo(s);
  const int64_t x_g = N * xg.img, ncol = RS * Cg;
  T* xt = workspace<T>(0, size_t(G) * x_g);
  build_x_nhwc(s, xg, x, xt);
  const std::vector<Run> runs = col_runs(s, xg);
  const int64_t nruns = static_cast<int64_t>(runs.size());
  const int nth = num_threads();
  // A task is a chunk of output rows of one image for a group of filter blocks, filter
  // blocks outer: the chunk's source rows stay in L2 while every filter block of the
  // group passes over them, and each block's panel stays cached across the chunk's
  // tiles. Chunks are sized to ~kChunkBytes of source; with too few chunks to keep
  // ~4 tasks per thread (batch 1, small planes), the filter blocks are split into groups.
  constexpr int64_t kChunkBytes = int64_t(192) << 10;
  const int64_t reach = (s.R - 1) * s.dh / s.sh;
  const int64_t row_bytes = xg.Wq * Cg * xg.ph.count() * int64_t(sizeof(T));
  const int64_t RC = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(1, row_bytes) - reach, 1, P);
  const int64_t CPI = ceil_div(P, RC), chunks = N * CPI;
  const int64_t KGn = std::min<int64_t>(KTn, ceil_div(4 * nth, G * chunks));
  const int64_t tasks = G * chunks * KGn, PQ = P * Q;
  const int64_t xrow = xg.Wq * Cg, xq = Cg;
  const bool post = ep.has_post();
  // Filters given per call: where each filter block serves one task (one chunk of rows:
  // small planes at batch 1), the task packs its block into a buffer of its own (an L2-
  // sized ncol x KT panel) just before using it, so the packed filters never travel
  // through memory (512@7x7 batch 1: 1.14x at 2 threads, 1.17x at one, interleaved).
  // With more chunks every one would pack its blocks again (two at batch 2 measured no
  // gain): the panels are packed once, up front.
  const bool pack_in_task = !pre && chunks == 1;
  const T* wp = pre;
  std::vector<int64_t> tapcol;
  if (pack_in_task) {
    tapcol = tap_columns(s, runs);
  } else if (!wp) {
    T* buf = line_aligned(workspace<T>(1, size_t(nhwc_packed_len<T, KV>(s)) + 64 / sizeof(T)));
    pack_nhwc<T, KV>(s, wfn, buf);
    wp = buf;
  }
#pragma omp parallel num_threads(threads_for(tasks, 2 * KT * ncol * RC * Q * ceil_div(KTn, KGn)))
  {
    alignas(64) T out[FMP * KT];
    int64_t pix[FMP];
    // Slot 1 (the up-front panels) is free when the tasks pack their own blocks.
    T* panel = pack_in_task ? workspace<T>(1, size_t(ncol * KT)) : nullptr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t kg = task % KGn, ch = task / KGn % chunks, g = task / (KGn * chunks);
      const int64_t n = ch / CPI, p0 = ch % CPI * RC, j1 = std::min(P, p0 + RC) * Q;
      const T* xn = xt + g * x_g + n * xg.img;
      for (int64_t kt = KTn * kg / KGn; kt < KTn * (kg + 1) / KGn; ++kt) {
        const T* wk;
        if (pack_in_task) {
          pack_nhwc_block<T, KV>(s, wfn, tapcol.data(), g, kt, panel);
          wk = panel;
        } else {
          wk = wp + (g * KTn + kt) * ncol * KT;
        }
        const int64_t kv = std::min<int64_t>(KT, Kg - kt * KT);
        for (int64_t j0 = p0 * Q; j0 < j1; j0 += FMP) {
          const int mp = static_cast<int>(std::min<int64_t>(FMP, j1 - j0));
          for (int i = 0; i < mp; ++i) pix[i] = (j0 + i) / Q * xrow + (j0 + i) % Q * xq;
          fwd_tile_n<T, KV>(mp, nruns, runs.data(), xn, pix, wk, out);
          for (int64_t kk = 0; kk < kv; ++kk) {
            const int64_t k = g * Kg + kt * KT + kk;
            const int64_t at = (n * s.K + k) * PQ + j0;
            T* dst = y + at;
            const T b = ep.bias ? ep.bias[k] : T(0);
            if (post) {  // the whole output stage in the store (epilogue.h)
              const T* rs = ep.residual ? ep.residual + at : nullptr;
              for (int i = 0; i < mp; ++i) dst[i] = ep.act(out[i * KT + kk] + b + (rs ? rs[i] : T(0)));
            } else {
              for (int i = 0; i < mp; ++i) dst[i] = out[i * KT + kk] + b;
            }
          }
        }
      }
    }
  }
}

// The channels-last forward wins wherever its k tile is well used and the reduction is
// long enough to amortise a tile's setup. Measured with the 6-pixel tiles (2 threads,
// interleaved): 1.06-1.5x ahead of the wide-row grid on every ResNet-18/50 3x3 layer
// (stride 1 and 2) and on the 7x7/2 stem, at batch 1, 8 and 16; the wide grid keeps the
// layers with few taps x channels (3 -> 32 3x3 on 32 x 32: 0.83-0.92x) and those where
// most of it is used anyway while the k tile is not.
template <class T>
bool prefer_nhwc(const ConvShape& s) {
  constexpr int L = Simd<T>::L, JB = NR * L;
  const int64_t Kg = s.Kg();
  if (Kg < 2 * L || s.P * s.Q == 0) return false;
  const double k_eff = double(Kg) / double(ceil_div(Kg, 2 * L) * 2 * L);
  const double wide_eff = double(s.P * s.Q) / double(ceil_div(s.P * fwd_geom<T>(s).PW, JB) * JB);
  return (k_eff >= 0.75 && s.Cg() * s.R * s.S >= 64) || wide_eff < 0.92 * k_eff;
}

}  // namespace

namespace {
// Geometry where the padded, phase-split sources would be far larger than the data
// they hold: huge padding or dilation around a small output, where most taps read
// only padding (dilation = padding = 3000 on 8 x 8 would take ~0.6 GB). The estimate
// is in double: the planes' extents can overflow int64 there.
inline bool sparse_reach(const ConvShape& s) {
  const double need = double(s.H) * s.W + double(s.P) * s.Q * s.R * s.S;
  const double ext_h = double((s.R - 1) * s.dh + s.ph) / s.sh, ext_w = double((s.S - 1) * s.dw + s.pw) / s.sw;
  // Covers the forward's phase planes (P + reach) and backward-data's padded grad_out
  // (H / stride + P + twice the reach).
  const double plane = (double(s.H) / s.sh + s.P + 2 * ext_h + 2) *
                       (double(s.W) / s.sw + s.Q + 2 * ext_w + 2);
  return plane > 16 * need + double(1 << 16);
}

// Plain loops for sparse_reach geometries: no workspace, each output one ordered sum
// (so thread-count independent); the work is the output's, which is small there.
template <class T>
void naive_fwd(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y) {
  const int64_t Cg = s.Cg(), Kg = s.Kg();
#pragma omp parallel for schedule(static) num_threads(threads_for(s.N * s.K, s.P * s.Q * Cg * s.R * s.S))
  for (int64_t nk = 0; nk < s.N * s.K; ++nk) {
    const int64_t n = nk / s.K, k = nk % s.K, g = k / Kg;
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        T acc = 0;
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.sh - s.ph + r * s.dh;
            if (h < 0 || h >= s.H) continue;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t ww = q * s.sw - s.pw + t * s.dw;
              if (ww < 0 || ww >= s.W) continue;
              acc += x[((n * s.C + g * Cg + c) * s.H + h) * s.W + ww] *
                     w[((k * Cg + c) * s.R + r) * s.S + t];
            }
          }
        const int64_t at = (nk * s.P + p) * s.Q + q;
        y[at] = ep.apply(acc, k, at);
      }
  }
}

template <class T>
void naive_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Cg = s.Cg(), Kg = s.Kg();
#pragma omp parallel for schedule(static) num_threads(threads_for(s.N * s.C, s.P * s.Q * Kg * s.R * s.S))
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    const int64_t n = nc / s.C, c = nc % s.C, g = c / Cg, cg = c % Cg;
    T* d = gx + nc * s.H * s.W;
    std::fill(d, d + s.H * s.W, T(0));
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const T v = gy[((n * s.K + k) * s.P + p) * s.Q + q];
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.sh - s.ph + r * s.dh;
            if (h < 0 || h >= s.H) continue;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t ww = q * s.sw - s.pw + t * s.dw;
              if (ww < 0 || ww >= s.W) continue;
              d[h * s.W + ww] += v * w[((k * Cg + cg) * s.R + r) * s.S + t];
            }
          }
        }
  }
}

template <class T>
void naive_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), RS = s.R * s.S;
#pragma omp parallel for schedule(static) num_threads(threads_for(s.K * Cg * RS, s.N * s.P * s.Q))
  for (int64_t e = 0; e < s.K * Cg * RS; ++e) {
    const int64_t k = e / (Cg * RS), c = e / RS % Cg, r = e % RS / s.S, t = e % s.S;
    const int64_t ci = k / Kg * Cg + c;
    T acc = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t h = p * s.sh - s.ph + r * s.dh;
        if (h < 0 || h >= s.H) continue;
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t ww = q * s.sw - s.pw + t * s.dw;
          if (ww < 0 || ww >= s.W) continue;
          acc += gy[((n * s.K + k) * s.P + p) * s.Q + q] * x[((n * s.C + ci) * s.H + h) * s.W + ww];
        }
      }
    gw[e] = acc;
  }
}
}  // namespace

template <class T>
static void fwd_biased(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y,
                       const T* pre = nullptr) {
  if (s.N == 0 || s.K == 0 || s.P == 0 || s.Q == 0) return;
  if (sparse_reach(s)) return naive_fwd(s, x, w, ep, y);
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, PQ = s.P * s.Q;
  if (prefer_nhwc<T>(s)) {
    const int64_t RS = s.R * s.S;
    return fwd_nhwc<T, 2>(s, x, [w, Kg, Cg, RS](int64_t g, int64_t k, int64_t c, int64_t t) {
      return w[((g * Kg + k) * Cg + c) * RS + t];
    }, ep, y, pre);
  }
  const FwdGeom geo = fwd_geom<T>(s);
  T* src = workspace<T>(0, size_t(s.N) * s.C * geo.cs);
  build_fwd_src(s, geo, x, src);

  std::vector<TapConv<T>> prob(G);
  const int64_t RS = s.R * s.S;
  for (int64_t g = 0; g < G; ++g) {
    TapConv<T>& pr = prob[g];
    pr.Kc = Kg; pr.Cc = Cg; pr.Po = s.P; pr.Qo = s.Q; pr.PW = geo.PW; pr.cs = geo.cs;
    pr.off = fwd_offsets<T>(s, geo);
    pr.pack([&](int64_t k, int64_t c, int64_t t) { return w[((g * Kg + k) * Cg + c) * RS + t]; });
  }
  const int64_t KB = ceil_div(Kg, MR), JBn = prob[0].jblocks();
  const T* bias_ = ep.bias;
  const bool post = ep.has_post();
  auto put_fwd = [&, post](int64_t n, int64_t g) {
    const int64_t base = (n * s.K + g * Kg) * PQ;
    T* yn = y + base;
    const T* bg = bias_ ? bias_ + g * Kg : nullptr;
    const T* rn = ep.residual ? ep.residual + base : nullptr;
    return [yn, bg, rn, post, &ep, &s, PQ](int64_t k, int64_t p, int64_t q, const T* v, int64_t len) {
      const int64_t at = k * PQ + p * s.Q + q;
      T* dst = yn + at;
      const T b = bg ? bg[k] : T(0);
      if (post) {  // the whole output stage in the store (epilogue.h)
        const T* rs = rn ? rn + at : nullptr;
        for (int64_t u = 0; u < len; ++u) dst[u] = ep.act(v[u] + b + (rs ? rs[u] : T(0)));
      } else {
        for (int64_t u = 0; u < len; ++u) dst[u] = v[u] + b;
      }
    };
  };
  const int nth = num_threads();
  // Cache traffic model: image-outer streams all packed filters once per (image, j-run);
  // filter-outer streams every image's source once per group of KBG filter blocks
  // (~512 KB of packed filters, kept in L2).
  const int64_t panel = MR * Cg * RS * int64_t(sizeof(T));
  const int64_t KBG = std::max<int64_t>(1, std::min<int64_t>(KB, (int64_t(512) << 10) / panel));
  const int64_t jrun = std::max<int64_t>(1, std::min<int64_t>(8, JBn));
  const int64_t runs = ceil_div(JBn, jrun);
  const double img_outer = double(s.N) * runs * KB * panel;
  const double flt_outer = double(ceil_div(KB, KBG)) * s.N * Cg * geo.cs * sizeof(T);
  if (flt_outer < img_outer) {
    // A task is KBG filter blocks for a range of images: the packed filters stay in
    // cache across all of them, and each source block across the KBG filter blocks.
    // Few images (batch 1-8) and one filter group would leave threads idle: the j-blocks
    // of each image are split into js ranges as well, so there are ~4 tasks per thread
    // whatever the batch. Each output is still one micro-kernel sum, so the results do
    // not depend on the split.
    const int64_t KGn = ceil_div(KB, KBG);
    const int64_t ns = std::min<int64_t>(s.N, ceil_div(4 * nth, G * KGn));
    const int64_t js = std::max<int64_t>(1, std::min<int64_t>(JBn, ceil_div(4 * nth, G * KGn * ns)));
    const int64_t tasks = G * KGn * ns * js;
    const int64_t task_jb = ceil_div(JBn, js);
#pragma omp parallel num_threads(threads_for(tasks, 2 * MR * Cg * RS * task_jb * 32))
    {
      Tmp<T> tmp;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t jp = task % js, part = task / js % ns, gk = task / (js * ns);
        const int64_t kg = gk % KGn, g = gk / KGn;
        const int64_t jb0 = JBn * jp / js, jb1 = JBn * (jp + 1) / js;
        for (int64_t n = s.N * part / ns; n < s.N * (part + 1) / ns; ++n) {
          const T* sp = src + (n * s.C + g * Cg) * geo.cs;
          auto put = put_fwd(n, g);
          for (int64_t jb = jb0; jb < jb1; ++jb)
            for (int64_t kb = kg * KBG; kb < std::min(KB, (kg + 1) * KBG); ++kb)
              prob[g].run(kb, jb, sp, tmp.v.data(), put);
        }
      }
    }
    return;
  }
  // Tasks: (n, g, run of j-blocks); the filter blocks are the inner loop so the source
  // rows a task touches stay in cache while every filter block passes over them.
  const int64_t tasks = s.N * G * runs;
#pragma omp parallel num_threads(threads_for(tasks, 2 * Kg * Cg * RS * jrun * 32))
  {
    Tmp<T> tmp;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t run = task % runs, ng = task / runs, g = ng % G, n = ng / G;
      const T* sp = src + (n * s.C + g * Cg) * geo.cs;
      auto put = put_fwd(n, g);
      for (int64_t kb = 0; kb < KB; ++kb)
        for (int64_t jb = run * jrun; jb < std::min(JBn, (run + 1) * jrun); ++jb)
          prob[g].run(kb, jb, sp, tmp.v.data(), put);
    }
  }
}

template <class T>
void conv_direct_fwd(const ConvShape& s, const T* x, const T* w, const Epilogue<T>& ep, T* y) {
  if (pointwise_serves(s)) return conv_pointwise_fwd<T>(s, x, w, nullptr, ep, y);
  fwd_biased(s, x, w, ep, y);
}

// The prepacked form: a header of kDirectPackHeader elements (a tag, the filter tile of
// the ISA that packed it, the panel length: an ISA switch between pack and use would
// otherwise read panels of the wrong width), then the channels-last forward's panels.
// Only layers that path serves have one: the pointwise kernel has panels of its own
// (conv_pointwise_pack), except on the small planes of pointwise_nhwc.
namespace {
constexpr int64_t kDirectPackHeader = 16;
constexpr double kDirectPackTag = 20261201.0;
// 1x1 layers with prepacked filters whose output plane is small run channels-last too:
// the pointwise kernel's 16-column tiles leave a 7 x 7 plane's 49th column a tile of its
// own (a tenth of its work wasted), while fwd_nhwc's 6-pixel tiles waste 5 of 54. Its
// channels-last copy of x pays for itself there and on strided layers of deep inputs,
// whose pointwise path gathers the stride grid anyway. Measured (2 threads, prepacked,
// interleaved, min of calls; channels-last vs pointwise): 512->2048 and 2048->512 @7
// 1.24-1.38x at batch 1, 1.13-1.37x at batch 8; 1x1/2 1024->2048@14 1.19-1.38x / 1.12x,
// 512->1024@28 1.15-1.19x / 1.09x; but stride 1 at 14 x 14 0.81-0.94x (b1), 1x1/2
// 128->256@28 0.93x (b8), and at 56 x 56 0.5-0.8x. With filters given per call the
// channels-last panels would be packed every call (0.4-0.8x): the pointwise kernel
// reads its filters in place. Only deep inputs (>= 64 channels per group) were measured.
template <class T>
bool pointwise_nhwc(const ConvShape& s) {
  const int64_t PQ = s.P * s.Q;
  const bool strided = s.sh > 1 || s.sw > 1;
  return prefer_nhwc<T>(s) && s.Cg() >= 64 && (PQ <= 64 || (strided && PQ <= 196 && s.Cg() >= 256));
}

template <class T>
bool direct_packs(const ConvShape& s) {
  return (!pointwise_serves(s) || pointwise_nhwc<T>(s)) && s.K > 0 && s.P > 0 && s.Q > 0 &&
         !sparse_reach(s) && prefer_nhwc<T>(s);
}
}  // namespace

template <class T>
int64_t conv_direct_packed_size(const ConvShape& s) {
  return direct_packs<T>(s) ? kDirectPackHeader + nhwc_packed_len<T, 2>(s) : 0;
}

template <class T>
void conv_direct_pack(const ConvShape& s, const T* w, T* wp) {
  const int64_t len = nhwc_packed_len<T, 2>(s), Kg = s.Kg(), Cg = s.Cg(), RS = s.R * s.S;
  std::fill(wp, wp + kDirectPackHeader, T(0));
  wp[0] = T(kDirectPackTag);
  wp[1] = T(2 * Simd<T>::L);
  wp[2] = T(len);
  pack_nhwc<T, 2>(s, [w, Kg, Cg, RS](int64_t g, int64_t k, int64_t c, int64_t t) {
    return w[((g * Kg + k) * Cg + c) * RS + t];
  }, wp + kDirectPackHeader);
}

template <class T>
void conv_direct_fwd_packed(const ConvShape& s, const T* x, const T* w, const T* wp,
                            const Epilogue<T>& ep, T* y) {
  if (!direct_packs<T>(s)) throw std::invalid_argument("packed: this layer has no prepacked direct form");
  if (wp[0] != T(kDirectPackTag) || wp[1] != T(2 * Simd<T>::L) ||
      wp[2] != T(nhwc_packed_len<T, 2>(s)))
    throw std::invalid_argument(
        "packed: not conv_direct_pack's output for this layer and instruction set (repack "
        "after set_isa)");
  fwd_biased(s, x, w, ep, y, wp + kDirectPackHeader);
}

template <class T>
void conv_direct_bwd_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  if (pointwise_serves(s)) return conv_pointwise_bwd_data<T>(s, gy, w, gx);
  if (s.N == 0 || s.C == 0 || s.H == 0 || s.W == 0) return;
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, HW = s.H * s.W, RS = s.R * s.S;
  if (sparse_reach(s)) return naive_bwd_data(s, gy, w, gx);
  // Stride 1 with padding inside the kernel's reach: grad_x is the forward correlation of
  // grad_out (padded by (R-1)*dh - ph) with the flipped, transposed filters.
  if (s.sh == 1 && s.sw == 1 && s.ph <= (s.R - 1) * s.dh && s.pw <= (s.S - 1) * s.dw) {
    ConvShape t = s;
    t.C = s.K; t.H = s.P; t.W = s.Q;
    t.K = s.C; t.P = s.H; t.Q = s.W;
    t.ph = (s.R - 1) * s.dh - s.ph;
    t.pw = (s.S - 1) * s.dw - s.pw;
    if (prefer_nhwc<T>(t)) {
      const int64_t R = s.R, S = s.S;
      auto wt = [w, Kg, Cg, RS, R, S](int64_t g, int64_t c, int64_t k, int64_t tap) {
        return w[((g * Kg + k) * Cg + c) * RS + (R - 1 - tap / S) * S + (S - 1 - tap % S)];
      };
      return fwd_nhwc<T, 2>(t, gy, wt, Epilogue<T>{}, gx);
    }
  }
  // gx[h'*sh + a] += gy[h' + (a + ph - r*dh) / sh] * w[r] for taps with an exact division.
  // Margins mt / ml shift the most negative offsets to >= 0.
  int64_t mt = 0, ml = 0, maxdy = 0, maxdx = 0;
  // Phases past the image (stride > H) hold no pixel: the loops stop at the image.
  const int64_t nah = std::min(s.sh, s.H), nbw = std::min(s.sw, s.W);
  for (int64_t a = 0; a < nah; ++a)
    for (int64_t r = 0; r < s.R; ++r)
      if ((a + s.ph - r * s.dh) % s.sh == 0) {
        const int64_t d = (a + s.ph - r * s.dh) / s.sh;
        mt = std::max(mt, -d);
        maxdy = std::max(maxdy, d);
      }
  for (int64_t b = 0; b < nbw; ++b)
    for (int64_t t = 0; t < s.S; ++t)
      if ((b + s.pw - t * s.dw) % s.sw == 0) {
        const int64_t d = (b + s.pw - t * s.dw) / s.sw;
        ml = std::max(ml, -d);
        maxdx = std::max(maxdx, d);
      }
  const int64_t Ha = ceil_div(s.H, s.sh), Wa = ceil_div(s.W, s.sw);  // largest phase grid
  const int64_t PW = std::max(Wa + maxdx + ml, ml + s.Q);
  const int64_t rows = std::max(Ha + maxdy + mt, mt + s.P);
  const int64_t PL = plane_len<T>(rows, PW);
  T* src = workspace<T>(0, size_t(s.N) * s.K * PL);
  const int64_t planes = s.N * s.K;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, PL))
  for (int64_t nk = 0; nk < planes; ++nk) {
    T* d = src + nk * PL;
    std::fill(d, d + PL, T(0));
    for (int64_t p = 0; p < s.P; ++p)
      std::memcpy(d + (p + mt) * PW + ml, gy + nk * s.P * s.Q + p * s.Q, sizeof(T) * s.Q);
  }
  // Zero first: phases with no taps (stride > kernel) receive nothing.
  std::vector<TapConv<T>> prob;  // [phase][g]
  std::vector<int64_t> pa, pb;
  for (int64_t a = 0; a < nah; ++a)
    for (int64_t b = 0; b < nbw; ++b) {
      std::vector<int64_t> taps, offs;
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t)
          if ((a + s.ph - r * s.dh) % s.sh == 0 && (b + s.pw - t * s.dw) % s.sw == 0) {
            taps.push_back(r * s.S + t);
            offs.push_back(((a + s.ph - r * s.dh) / s.sh + mt) * PW + (b + s.pw - t * s.dw) / s.sw + ml);
          }
      const int64_t Po = a < s.H ? ceil_div(s.H - a, s.sh) : 0;
      const int64_t Qo = b < s.W ? ceil_div(s.W - b, s.sw) : 0;
      for (int64_t g = 0; g < G; ++g) {
        TapConv<T> pr;
        pr.Kc = Cg; pr.Cc = Kg; pr.Po = Po; pr.Qo = Qo; pr.PW = PW; pr.cs = PL;
        pr.off = offs;
        pr.pack([&](int64_t c, int64_t k, int64_t t) {
          return w[((g * Kg + k) * Cg + c) * RS + taps[t]];
        });
        prob.push_back(std::move(pr));
        pa.push_back(a);
        pb.push_back(b);
      }
    }
  const int64_t KB = ceil_div(Cg, MR);
  auto put_bwd = [&](int64_t n, int64_t pi) {
    const int64_t g = pi % G, a = pa[pi], b = pb[pi];
    T* gxn = gx + (n * s.C + g * Cg) * HW;
    return [gxn, a, b, &s, HW](int64_t c, int64_t p, int64_t q, const T* v, int64_t len) {
      T* dst = gxn + c * HW + (p * s.sh + a) * s.W + q * s.sw + b;
      for (int64_t u = 0; u < len; ++u) dst[u * s.sw] = v[u];
    };
  };
  const int64_t np = static_cast<int64_t>(prob.size());
  const int nth = num_threads();
  // Same cache traffic model as the forward.
  const int64_t panel = MR * Kg * RS * int64_t(sizeof(T));
  const int64_t KBG = std::max<int64_t>(1, std::min<int64_t>(KB, (int64_t(512) << 10) / panel));
  const int64_t JBmax = ceil_div(ceil_div(s.H, s.sh) * PW, NR * Simd<T>::L);
  const double img_outer = double(s.N) * ceil_div(JBmax, 8) * KB * panel;
  const double flt_outer = double(ceil_div(KB, KBG)) * s.N * Kg * PL * sizeof(T) * np / G;
  if (flt_outer < img_outer) {
    // As in the forward, few images also split each phase's j-blocks into js ranges.
    const int64_t KGn = ceil_div(KB, KBG);
    const int64_t ns = std::min<int64_t>(s.N, ceil_div(4 * nth, np * KGn));
    const int64_t js =
        std::max<int64_t>(1, std::min<int64_t>(JBmax, ceil_div(4 * nth, np * KGn * ns)));
    const int64_t tasks = np * KGn * ns * js;
#pragma omp parallel num_threads(threads_for(tasks, 2 * MR * Kg * RS * 32 * ceil_div(PL, 32 * js)))
    {
      Tmp<T> tmp;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t jp = task % js, part = task / js % ns, pk = task / (js * ns);
        const int64_t kg = pk % KGn, pi = pk / KGn;
        const TapConv<T>& pr = prob[pi];
        const int64_t JBn = pr.Po * pr.Qo == 0 ? 0 : pr.jblocks();
        const int64_t jb0 = JBn * jp / js, jb1 = JBn * (jp + 1) / js;
        for (int64_t n = s.N * part / ns; n < s.N * (part + 1) / ns; ++n) {
          const T* sp = src + (n * s.K + (pi % G) * Kg) * PL;
          auto put = put_bwd(n, pi);
          for (int64_t jb = jb0; jb < jb1; ++jb)
            for (int64_t kb = kg * KBG; kb < std::min(KB, (kg + 1) * KBG); ++kb)
              pr.run(kb, jb, sp, tmp.v.data(), put);
        }
      }
    }
    return;
  }
  struct Task { int64_t n, pi, jb0, jb1; };
  std::vector<Task> tasks;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t pi = 0; pi < np; ++pi) {
      const int64_t JBn = prob[pi].Po * prob[pi].Qo == 0 ? 0 : prob[pi].jblocks();
      for (int64_t j = 0; j < JBn; j += 8) tasks.push_back({n, pi, j, std::min(JBn, j + 8)});
    }
  const int64_t nt = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(threads_for(nt, 2 * Kg * Cg * RS * 8 * 32))
  {
    Tmp<T> tmp;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < nt; ++i) {
      const Task& tk = tasks[i];
      const TapConv<T>& pr = prob[tk.pi];
      const T* sp = src + (tk.n * s.K + (tk.pi % G) * Kg) * PL;
      auto put = put_bwd(tk.n, tk.pi);
      for (int64_t kb = 0; kb < KB; ++kb)
        for (int64_t jb = tk.jb0; jb < tk.jb1; ++jb) pr.run(kb, jb, sp, tmp.v.data(), put);
    }
  }
}

namespace {
// out[i][t] = sum_n sum_j gyw[n][i][j] * src[n][off[t] + j]: KW rows of gy x NT taps,
// vectorised over j; the accumulators live across all images and are reduced once.
#if defined(FC_ISA_avx512)
constexpr int KW = 8;  // 8 x 3 = 24 accumulators of 32 zmm
#else
constexpr int KW = 4;  // 4 x 3 = 12 of 16
#endif
constexpr int NTW = 3;
template <class T, int NT>
void wgrad_block(int64_t N, int64_t len, const T* const* gyr, int64_t gy_ns, const T* src,
                 int64_t src_ns, const int64_t* off, T* out) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  V acc[KW][NT];
  for (int i = 0; i < KW; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = V{};
  for (int64_t n = 0; n < N; ++n) {
    const T* g[KW];
    for (int i = 0; i < KW; ++i) g[i] = gyr[i] + n * gy_ns;
    const T* sn = src + n * src_ns;
    for (int64_t j = 0; j < len; j += L) {
      V xv[NT];
#pragma GCC unroll 2
      for (int t = 0; t < NT; ++t) xv[t] = S::load(sn + off[t] + j);
#pragma GCC unroll 8
      for (int i = 0; i < KW; ++i) {
        const V gv = S::load(g[i] + j);
#pragma GCC unroll 2
        for (int t = 0; t < NT; ++t) acc[i][t] += gv * xv[t];
      }
    }
  }
  for (int i = 0; i < KW; ++i)
    for (int t = 0; t < NT; ++t) {
      T sum = 0;
      for (int l = 0; l < L; ++l) sum += acc[i][t][l];
      out[i * NT + t] = sum;
    }
}
}  // namespace

template <class T>
void conv_direct_bwd_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  if (pointwise_serves(s)) return conv_pointwise_bwd_weight<T>(s, gy, x, gw);
  const int64_t Cg = s.Cg(), Kg = s.Kg(), G = s.groups, RS = s.R * s.S;
  const int64_t total = s.K * Cg * RS;
  if (s.N == 0 || s.P == 0 || s.Q == 0) {
    std::fill(gw, gw + total, T(0));
    return;
  }
  if (sparse_reach(s)) return naive_bwd_weight(s, gy, x, gw);
  constexpr int L = Simd<T>::L;
  // Channels-last outer-product kernel when the k tile is at least half used; the
  // inner-product kernel below serves few filters per group (depthwise and the like).
  if (Kg >= 2 * L) return bwd_weight_nhwc<T, 2, WNC2>(s, gy, x, gw);
  if (2 * Kg >= L) return bwd_weight_nhwc<T, 1, WNC1>(s, gy, x, gw);
  const FwdGeom geo = fwd_geom<T>(s);
  T* src = workspace<T>(0, size_t(s.N) * s.C * geo.cs);
  build_fwd_src(s, geo, x, src);
  const std::vector<int64_t> off = fwd_offsets<T>(s, geo);
  // gy in the wide layout, zero in the thrown-away columns and up to a whole vector.
  const int64_t len = ceil_div(s.P * geo.PW, L) * L;
  T* gyw = workspace<T>(1, size_t(s.N) * s.K * len + L);
  const int64_t planes = s.N * s.K;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes, len))
  for (int64_t nk = 0; nk < planes; ++nk) {
    T* d = gyw + nk * len;
    std::fill(d, d + len, T(0));
    for (int64_t p = 0; p < s.P; ++p)
      std::memcpy(d + p * geo.PW, gy + (nk * s.P + p) * s.Q, sizeof(T) * s.Q);
  }
  // A task is KW filters x CB channels; its (channel, tap) pairs are flattened so that
  // small kernels (1x1) still fill the NTW-wide register block.
  const int64_t CB = std::max<int64_t>(1, std::min<int64_t>(Cg, 4 * NTW / RS));
  const int64_t KBw = ceil_div(Kg, KW), CBn = ceil_div(Cg, CB);
  const int64_t tasks = G * KBw * CBn;
#pragma omp parallel num_threads(threads_for(tasks, 2 * KW * s.N * len * RS * CB))
  {
    std::vector<int64_t> toff;
    T out[KW * NTW];
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t cb = task % CBn, gk = task / CBn, kb = gk % KBw, g = gk / KBw;
      const int64_t k0 = g * Kg + kb * KW, kv = std::min<int64_t>(KW, Kg - kb * KW);
      const int64_t c0 = cb * CB, cn = std::min(CB, Cg - c0);
      const T* gyr[KW];
      for (int i = 0; i < KW; ++i) gyr[i] = gyw + (k0 + std::min<int64_t>(i, kv - 1)) * len;
      const T* sp = src + (g * Cg + c0) * geo.cs;
      toff.clear();
      for (int64_t c = 0; c < cn; ++c)
        for (int64_t t = 0; t < RS; ++t) toff.push_back(c * geo.cs + off[t]);
      const int64_t gy_ns = s.K * len, src_ns = s.C * geo.cs, tot = cn * RS;
      for (int64_t t0 = 0; t0 < tot;) {
        const int64_t nt = std::min<int64_t>(NTW, tot - t0);
        switch (nt) {
          case 3: wgrad_block<T, 3>(s.N, len, gyr, gy_ns, sp, src_ns, toff.data() + t0, out); break;
          case 2: wgrad_block<T, 2>(s.N, len, gyr, gy_ns, sp, src_ns, toff.data() + t0, out); break;
          default: wgrad_block<T, 1>(s.N, len, gyr, gy_ns, sp, src_ns, toff.data() + t0, out); break;
        }
        for (int64_t i = 0; i < kv; ++i)
          for (int64_t t = 0; t < nt; ++t) {
            const int64_t ct = t0 + t;  // = c * RS + tap
            gw[((k0 + i) * Cg + c0 + ct / RS) * RS + ct % RS] = out[i * nt + t];
          }
        t0 += nt;
      }
    }
  }
}

#define FC_INSTANTIATE(T)                                                                  \
  template void conv_direct_fwd<T>(const ConvShape&, const T*, const T*, const Epilogue<T>&, T*); \
  template int64_t conv_direct_packed_size<T>(const ConvShape&);                                \
  template void conv_direct_pack<T>(const ConvShape&, const T*, T*);                            \
  template void conv_direct_fwd_packed<T>(const ConvShape&, const T*, const T*, const T*,       \
                                          const Epilogue<T>&, T*);                              \
  template void conv_direct_bwd_data<T>(const ConvShape&, const T*, const T*, T*);        \
  template void conv_direct_bwd_weight<T>(const ConvShape&, const T*, const T*, T*);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace FC_ISA
}  // namespace fc
