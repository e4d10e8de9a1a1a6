// BLIS-style GEMM driver shared by gemm.cpp and the im2col convolution.
//
// C[i, off(j)] = alpha * sum_k A(i,k) B(k,j) + beta * C[...] (+ bias[i])
// and, optionally (Post), then C = clamp(C + residual[same index], lo, hi): the
// convolution's output stage (common/epilogue.h) applied by the final k pass's stores.
//
// A and B are never read directly: a packer copies KC x NC blocks of B and MC x KC
// blocks of A into contiguous, aligned micro-panels (NR columns / MR rows interleaved
// along k). That is what lets the convolution fuse im2col into packing: its B packer
// reads the image instead of a materialised column matrix, so the forward and
// backward-weight passes need no column workspace at all. Column offsets off(j) let
// one GEMM span the whole batch (column j = image n, pixel pq) and write NCHW directly.
//
// Included inside no namespace; everything lands in fc::FC_ISA, so every ISA copy
// gets its own micro-kernel compiled with that ISA's flags.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#ifndef FC_ISA
#error "compiled per ISA by CMake"
#endif

namespace fc {
namespace FC_ISA {
namespace gemm_detail {

// The rest of a fused output stage beyond the bias: residual (indexed like C, relative
// to the C pointer handed to run) and clamp. Applied only once every k block has been
// summed into C (the bias goes with the first k block, this with the last).
template <class T>
struct Post {
  const T* residual = nullptr;
  T lo = -std::numeric_limits<T>::infinity(), hi = std::numeric_limits<T>::infinity();
  bool on = false;
  T apply(T v, int64_t at) const {
    if (residual) v += residual[at];
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
  }
};

// Register tile and cache blocking per ISA and type. MR x NR accumulators must fit
// the register file with room for NV B vectors and one broadcast: AVX-512 has 32 zmm
// (14 x 2 = 28 accumulators), AVX2 16 ymm (6 x 2 = 12), the generic path assumes 16
// 128-bit registers (SSE2 on x86-64; plain scalar code where vectors do not exist).
// KC keeps one kc x NR panel of B in L1 (32 KiB), MC x KC of A in L2 (1 MiB on this
// Zen 4 part), KC x NC of B in the shared L3.
#if defined(FC_ISA_avx512)
constexpr int kVecBytes = 64;
constexpr int kMR = 14;
#elif defined(FC_ISA_avx2)
constexpr int kVecBytes = 32;
constexpr int kMR = 6;
#else
constexpr int kVecBytes = 16;
constexpr int kMR = 6;
#endif
constexpr int kNV = 2;

template <class T>
struct Blk {
  typedef T V __attribute__((vector_size(kVecBytes)));
  static constexpr int VL = kVecBytes / int(sizeof(T));
  static constexpr int MR = kMR;
  static constexpr int NR = kNV * VL;
  static constexpr int64_t KC = sizeof(T) == 4 ? 384 : 256;
  static constexpr int64_t MC = MR * (sizeof(T) == 4 ? 12 : 10);
  static constexpr int64_t NC = NR * (sizeof(T) == 4 ? 64 : 96);
};

// Grow-only per-thread scratch: repeated calls (every conv layer, every step) would
// otherwise pay mmap + page faults for multi-MiB buffers each time.
struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > n) {
      std::free(p);
      p = nullptr;
      n = 0;
      const size_t sz = (bytes + 63) / 64 * 64;
      p = std::aligned_alloc(64, sz);
      if (!p) throw std::bad_alloc();
      n = sz;
    }
    return p;
  }
};
inline Scratch& pack_scratch() {
  static thread_local Scratch s;
  return s;
}

// Identity column map: C is an ordinary ldc-strided matrix.
struct ColIdentity {
  int64_t operator()(int64_t j) const { return j; }
};

// Micro-kernel: acc = sum_k a[k*MR + i] * b[k*NR + j] over packed panels, then the
// epilogue. c points at C(i0, j0) for a contiguous tile, else the tile goes through
// a small buffer and `off` places each column.
template <class T>
struct Micro {
  using B = Blk<T>;
  using V = typename B::V;
  static constexpr int MR = B::MR, NR = B::NR, VL = B::VL;

  // Only the first R rows of the tile (R <= MR; the panel keeps its MR stride). Row i's
  // sum runs over k in the same order for every R, so the values do not depend on R.
  // lda == 0: a is a packed panel (element (i, k) at a[k*MR + i]); otherwise A is read in
  // place, row i at a + i*lda with k contiguous (a plain row-major A, see InPlaceA), with
  // the same operations in the same order.
  // NV < kNV: only the first NV vectors of each row (a ragged last column panel of at
  // most NV * VL columns), which halves the FMAs a 7 x 7 image's 49th column costs; the
  // panel keeps its NR stride and the other accumulators are left zero.
  template <int R = MR, int NV = kNV>
  static inline void compute(int64_t kc, const T* __restrict a, const T* __restrict b,
                             V (&acc)[MR][kNV], int64_t lda = 0) {
    static_assert(R >= 1 && R <= MR, "rows");
    static_assert(NV >= 1 && NV <= kNV, "vectors");
    // Element (i, k) at a + i*ri + k*rk.
    const int64_t ri = lda ? lda : 1, rk = lda ? 1 : MR;
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) acc[i][v] = V{} ;
    for (int64_t k = 0; k < kc; ++k) {
      V bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const V*>(b + v * VL);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const T av = a[i * ri + k * rk];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
      }
      b += NR;
    }
  }

  // One full-width row of a tile: C = alpha * acc + bias (+ beta * C), vector stores.
  static inline void store_row(const V (&acc)[kNV], T* c, T alpha, T beta, T bias) {
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) {
      T* cp = c + v * VL;
      V r = alpha * acc[v] + bias;
      if (beta != T(0)) {
        V old;
        std::memcpy(&old, cp, sizeof(V));
        r += beta * old;
      }
      std::memcpy(cp, &r, sizeof(V));
    }
  }

  // Full tile, columns contiguous in C: vector epilogue straight into C.
  static inline void store_full(const V (&acc)[MR][kNV], T* c, int64_t ldc, T alpha, T beta,
                                const T* bias) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) store_row(acc[i], c + i * ldc, alpha, beta, bias ? bias[i] : T(0));
  }

  // The first mr rows of a full-width tile, same arithmetic as store_full.
  static inline void store_rows(const V (&acc)[MR][kNV], int mr, T* c, int64_t ldc, T alpha,
                                T beta, const T* bias) {
    for (int i = 0; i < mr; ++i) store_row(acc[i], c + i * ldc, alpha, beta, bias ? bias[i] : T(0));
  }
};

// acc = the tile's products over kc, its first NV vectors per row (see compute).
// A partial row panel (M = 64 or 128 against MR = 14 leaves 8 or 2 rows) runs a
// shorter kernel instead of multiplying zero rows: 8.6% of those layers' FMAs.
template <int NV, class T, class V>
inline void multiply(int64_t kc, const T* a, int64_t lda, const T* b, int mr,
                     V (&acc)[Micro<T>::MR][kNV]) {
  using M = Micro<T>;
  constexpr int MR = M::MR;
  constexpr int R8 = MR > 8 ? 8 : MR, R4 = MR > 4 ? 4 : MR, R2 = MR > 2 ? 2 : MR;
  if (lda) M::template compute<MR, NV>(kc, a, b, acc, lda);
  else if (mr == MR) M::template compute<MR, NV>(kc, a, b, acc);
  else if (mr <= R2) M::template compute<R2, NV>(kc, a, b, acc);
  else if (mr <= R4) M::template compute<R4, NV>(kc, a, b, acc);
  else if (mr <= R8) M::template compute<R8, NV>(kc, a, b, acc);
  else M::template compute<MR, NV>(kc, a, b, acc);
}

// a: the packed panel (lda == 0), or, for a full panel (mr == MR) of an A read in
// place, row i0's first element with rows lda apart.
template <class T, class ColMap>
inline void tile_store(int64_t kc, const T* a, int64_t lda, const T* b, T* C, int64_t ldc,
                       const ColMap& off, int64_t i0, int64_t j0, int mr, int nr, T alpha,
                       T beta, const T* bias) {
  using M = Micro<T>;
  using V = typename M::V;
  constexpr int MR = M::MR, NR = M::NR;
  V acc[MR][kNV];
  if (nr <= M::VL) multiply<1>(kc, a, lda, b, mr, acc);
  else multiply<kNV>(kc, a, lda, b, mr, acc);
  const int64_t o0 = off(j0);
  const bool contiguous = off(j0 + nr - 1) - o0 == nr - 1;
  if (nr == NR && contiguous) {
    if (mr == MR)
      M::store_full(acc, C + i0 * ldc + o0, ldc, alpha, beta, bias ? bias + i0 : nullptr);
    else
      M::store_rows(acc, mr, C + i0 * ldc + o0, ldc, alpha, beta, bias ? bias + i0 : nullptr);
    return;
  }
  // Vector stores, not memcpy: GCC turns a loop of row memcpys into one memmove call,
  // which also forces every accumulator through the stack.
  alignas(64) T buf[MR * NR];
  for (int i = 0; i < mr; ++i)
    for (int v = 0; v < kNV; ++v) *reinterpret_cast<V*>(buf + i * NR + v * M::VL) = acc[i][v];
  if (contiguous) {
    // Partial width, one run of columns: no column map per element.
    for (int i = 0; i < mr; ++i) {
      T* cp = C + (i0 + i) * ldc + o0;
      const T bi = bias ? bias[i0 + i] : T(0);
      for (int jj = 0; jj < nr; ++jj) {
        T r = alpha * buf[i * NR + jj] + bi;
        if (beta != T(0)) r += beta * cp[jj];
        cp[jj] = r;
      }
    }
    return;
  }
  for (int jj = 0; jj < nr; ++jj) {
    const int64_t o = off(j0 + jj);
    for (int i = 0; i < mr; ++i) {
      T* cp = C + (i0 + i) * ldc + o;
      T r = alpha * buf[i * NR + jj] + (bias ? bias[i0 + i] : T(0));
      if (beta != T(0)) r += beta * *cp;
      *cp = r;
    }
  }
}

// One micro-tile: multiply, store (alpha, beta, bias), and on the final k pass with a
// fused output stage the rest of it over the tile just stored (still in L1), which
// saves a second pass over C in memory.
template <class T, class ColMap>
inline void tile(int64_t kc, const T* a, int64_t lda, const T* b, T* C, int64_t ldc,
                 const ColMap& off, int64_t i0, int64_t j0, int mr, int nr, T alpha, T beta,
                 const T* bias, const Post<T>* post = nullptr) {
  tile_store(kc, a, lda, b, C, ldc, off, i0, j0, mr, nr, alpha, beta, bias);
  if (!post) return;
  const int64_t o0 = off(j0);
  if (off(j0 + nr - 1) - o0 == nr - 1) {
    // One run of columns (every tile of a one-image product): plain row loops that the
    // compiler vectorises, with no column map per element.
    for (int i = 0; i < mr; ++i) {
      T* __restrict c = C + (i0 + i) * ldc + o0;
      const T* __restrict r = post->residual ? post->residual + (i0 + i) * ldc + o0 : nullptr;
      const T lo = post->lo, hi = post->hi;
      if (r) {
        for (int jj = 0; jj < nr; ++jj) {
          T v = c[jj] + r[jj];
          v = v < lo ? lo : v;
          c[jj] = v > hi ? hi : v;
        }
      } else {
        for (int jj = 0; jj < nr; ++jj) {
          T v = c[jj];
          v = v < lo ? lo : v;
          c[jj] = v > hi ? hi : v;
        }
      }
    }
    return;
  }
  {
    for (int i = 0; i < mr; ++i)
      for (int jj = 0; jj < nr; ++jj) {
        const int64_t at = (i0 + i) * ldc + off(j0 + jj);
        C[at] = post->apply(C[at], at);
      }
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The stationary-A path (see serial): packed A up to this size, B packed this many
// NR-wide panels at a time with k blocks of this depth (kc * NR * 4 B = 24 KiB < L1).
// 768 KiB of A still leaves room in Zen 4's 1 MiB L2 for the B panels, and takes
// ResNet's 3x3 128-channel layer (645 KiB packed) off the path that streams a 3 MiB
// packed B block through L3: 12% faster there (384 KiB before).
constexpr double kStationaryA = 768 * 1024;
constexpr int64_t kStationaryKC = 192;
constexpr int64_t kStationaryPanels = 4;

// Column count (in NR-wide panels) up to which a plain A is read in place rather than
// packed (serial).
constexpr int64_t kInPlaceCols = 16;

// Whether a packer's A is a plain row-major matrix that the micro-kernel may read in
// place: packers with plain(), at(i, k) and lda (StridedPackA); every other one packs.
template <class T, class PackA, class = void>
struct InPlaceA {
  static bool ok(const PackA&) { return false; }
  static const T* at(const PackA&, int64_t, int64_t) { return nullptr; }
  static int64_t ld(const PackA&) { return 0; }
};
template <class T, class PackA>
struct InPlaceA<T, PackA, std::void_t<decltype(std::declval<const PackA&>().at(0, 0))>> {
  static bool ok(const PackA& p) { return p.plain(); }
  static const T* at(const PackA& p, int64_t i, int64_t k) { return p.at(i, k); }
  static int64_t ld(const PackA& p) { return p.lda; }
};

// Splits [0, n) into nt nearly equal parts; part t is [lo, hi).
inline void split(int64_t n, int nt, int t, int64_t& lo, int64_t& hi) {
  const int64_t q = n / nt, r = n % nt;
  lo = t * q + std::min<int64_t>(t, r);
  hi = lo + q + (t < r ? 1 : 0);
}

// One thread's share: C rows [i_lo, i_hi) x columns [j_lo, j_hi), summing k over
// [k_lo, k_hi). The classic five loops: jc (NC) / pc (KC) / ic (MC) / jr / ir, with
// private packing buffers, so threads never wait on each other.
template <class T, class PackA, class PackB, class ColMap>
void serial(int64_t i_lo, int64_t i_hi, int64_t j_lo, int64_t j_hi, int64_t k_lo, int64_t k_hi,
            T alpha, const PackA& pack_a, const PackB& pack_b, T beta, T* C, int64_t ldc,
            const ColMap& off, const T* bias, bool stationary_a,
            const Post<T>& post = Post<T>{}) {
  using Bk = Blk<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  const int64_t M = i_hi - i_lo, N = j_hi - j_lo, K = k_hi - k_lo;
  if (M <= 0 || N <= 0) return;
  if (stationary_a) {
    // Few rows (a conv layer's output channels against a whole batch of pixels): all
    // of packed A stays in L2, and B is packed a few micro-panels at a time so that
    // its panels are consumed from L1/L2 right after packing, instead of streaming a
    // multi-MiB KC x NC block through L3.
    const int64_t kc_max = ceil_div(K, ceil_div(K, kStationaryKC));
    const int64_t mp = ceil_div(M, MR);
    const int64_t nc_max = NR * kStationaryPanels;
    // Rounded to 64 bytes: B follows and is read with aligned vector loads.
    const size_t a_elems = (static_cast<size_t>(mp) * MR * K * sizeof(T) + 63) / 64 * 64 / sizeof(T);
    T* apack = static_cast<T*>(
        pack_scratch().get(sizeof(T) * (a_elems + static_cast<size_t>(kc_max) * nc_max)));
    T* bpack = apack + a_elems;
    // A block for k range pc lives at apack + pc * mp * MR, panels of kc * MR.
    for (int64_t pc = k_lo; pc < k_hi; pc += kc_max)
      pack_a(i_lo, M, pc, std::min(kc_max, k_hi - pc), apack + (pc - k_lo) * mp * MR);
    for (int64_t jc = j_lo; jc < j_hi; jc += nc_max) {
      const int64_t nc = std::min(nc_max, j_hi - jc);
      for (int64_t pc = k_lo; pc < k_hi; pc += kc_max) {
        const int64_t kc = std::min(kc_max, k_hi - pc);
        const T beta_eff = pc == k_lo ? beta : T(1);
        const T* bias_eff = pc == k_lo ? bias : nullptr;
        const Post<T>* post_eff = post.on && pc + kc == k_hi ? &post : nullptr;
        pack_b(pc, kc, jc, nc, bpack);
        const T* ablk = apack + (pc - k_lo) * mp * MR;
        for (int64_t jp = 0; jp * NR < nc; ++jp) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
          for (int64_t ip = 0; ip < mp; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, M - ip * MR));
            tile(kc, ablk + ip * kc * MR, int64_t(0), bpack + jp * kc * NR, C, ldc, off,
                 i_lo + ip * MR, jc + jp * NR, mr, nr, alpha, beta_eff, bias_eff, post_eff);
          }
        }
      }
    }
    return;
  }
  // Even k blocks (576 -> 2 x 288 rather than 384 + 192) keep every pass efficient.
  const int64_t kc_max = ceil_div(K, ceil_div(K, Bk::KC));
  const int64_t nc_max = std::min<int64_t>(ceil_div(N, NR) * NR, Bk::NC);
  const int64_t mc_max = std::min<int64_t>(ceil_div(M, MR) * MR, Bk::MC);
  const size_t b_elems = static_cast<size_t>(kc_max) * nc_max;
  T* bpack = static_cast<T*>(
      pack_scratch().get(sizeof(T) * (b_elems + static_cast<size_t>(kc_max) * mc_max)));
  T* apack = bpack + b_elems;
  // Few columns: each packed A value would serve only nc / NR micro-tiles, and packing
  // costs about as much as that many FMAs (a conv layer's filters against one image's
  // 7 x 7 or 14 x 14 outputs), so full row panels read a plain A in place.
  using IA = InPlaceA<T, PackA>;
  const bool in_place = IA::ok(pack_a) && N <= kInPlaceCols * NR;
  for (int64_t jc = j_lo; jc < j_hi; jc += nc_max) {
    const int64_t nc = std::min(nc_max, j_hi - jc);
    for (int64_t pc = k_lo; pc < k_hi; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k_hi - pc);
      const T beta_eff = pc == k_lo ? beta : T(1);
      const T* bias_eff = pc == k_lo ? bias : nullptr;
      const Post<T>* post_eff = post.on && pc + kc == k_hi ? &post : nullptr;
      pack_b(pc, kc, jc, nc, bpack);
      for (int64_t ic = i_lo; ic < i_hi; ic += mc_max) {
        const int64_t mc = std::min(mc_max, i_hi - ic);
        // In place: only a ragged last panel (fewer than MR rows) is packed, zero-padded.
        const int64_t full = in_place ? mc / MR * MR : 0;
        if (full < mc) pack_a(ic + full, mc - full, pc, kc, apack + full * kc);
        for (int64_t jp = 0; jp * NR < nc; ++jp) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
          for (int64_t ip = 0; ip * MR < mc; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
            const bool direct = ip * MR < full;
            const T* a = direct ? IA::at(pack_a, ic + ip * MR, pc) : apack + ip * kc * MR;
            tile(kc, a, direct ? IA::ld(pack_a) : int64_t(0), bpack + jp * kc * NR, C, ldc, off,
                 ic + ip * MR, jc + jp * NR, mr, nr, alpha, beta_eff, bias_eff, post_eff);
          }
        }
      }
    }
  }
}

inline Scratch& reduce_scratch() {
  static thread_local Scratch s;
  return s;
}

// The driver. PackA(i0, mc, k0, kc, dst) fills ceil(mc/MR) panels of kc*MR values
// (rows past mc zeroed); PackB(k0, kc, j0, nc, dst) fills ceil(nc/NR) panels of kc*NR
// (columns past nc zeroed). Both must be callable concurrently on disjoint ranges.
// nthreads == 1 never opens a parallel region (callers may already be in one).
//
// Threads get disjoint shares and run the serial loops without barriers (this box is
// shared, and a barrier waits for the slowest, possibly descheduled, thread): by rows
// (each thread packs all of B) or by columns (each packs all of A), whichever
// duplicates less. A row split sharing one packed B block (two barriers per KC x NC
// block) was tried: with the machine oversubscribed it ran 1024^3 at 30-49 GFLOP/s
// against 44-55 barrier-free, and the packing it saves is ~5% of a thread's work at
// 1024^3 (K*N copies against M/2*N*K FMAs), ~2% at 2048^3. Long thin products (the weight gradient: small M x N, k over the
// whole batch) are cut along k into a fixed number of chunks summed into private
// copies of C and reduced in a fixed order. The chunking depends on the shape only,
// never on the thread count, and every split follows the micro-tile grid, so results
// are bitwise identical for any number of threads.
template <class T, class PackA, class PackB, class ColMap>
void run(int64_t M, int64_t N, int64_t K, T alpha, const PackA& pack_a, const PackB& pack_b,
         T beta, T* C, int64_t ldc, const ColMap& off, const T* bias, int nthreads,
         const Post<T>& post = Post<T>{}) {
  using Bk = Blk<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    // Nothing to multiply: C = beta * C + bias (beta == 0 never reads C).
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        T* cp = C + i * ldc + off(j);
        *cp = (beta != T(0) ? beta * *cp : T(0)) + (bias ? bias[i] : T(0));
        if (post.on) *cp = post.apply(*cp, i * ldc + off(j));
      }
    return;
  }
  int nt = std::max(1, nthreads);
  if (static_cast<double>(M) * N * K < 1.0e6) nt = 1;
  // Decided on the whole product, not a thread's share: the k blocking (and so the
  // rounding) must not depend on the thread count.
  const bool stat = static_cast<double>(ceil_div(M, MR) * MR) * K * sizeof(T) <= kStationaryA;

  constexpr int kDepthChunks = 8;
  if (K >= kDepthChunks * 512 && double(M) * N <= double(1 << 19) &&
      double(M) * N * 16 <= double(K) * std::max(M, N)) {
    T* partial = static_cast<T*>(reduce_scratch().get(
        sizeof(T) * static_cast<size_t>(M) * N * (kDepthChunks - 1)));
    auto chunk = [&](int c) {
      int64_t lo, hi;
      split(ceil_div(K, 8), kDepthChunks, c, lo, hi);
      lo = std::min(K, lo * 8);
      hi = std::min(K, hi * 8);
      if (c == 0) {
        serial(0, M, 0, N, lo, hi, alpha, pack_a, pack_b, beta, C, ldc, off, bias, stat);
      } else {
        T* part = partial + static_cast<size_t>(c - 1) * M * N;
        serial(0, M, 0, N, lo, hi, alpha, pack_a, pack_b, T(0), part, N, ColIdentity{},
               static_cast<const T*>(nullptr), stat);
      }
    };
    const int ct = std::min(nt, kDepthChunks);
    if (ct > 1) {
#pragma omp parallel for schedule(static, 1) num_threads(ct)
      for (int c = 0; c < kDepthChunks; ++c) chunk(c);
    } else {
      for (int c = 0; c < kDepthChunks; ++c) chunk(c);
    }
    const int rt = ct > 1 && M > 1 ? ct : 1;
#pragma omp parallel for schedule(static) num_threads(rt) if (rt > 1)
    for (int64_t i = 0; i < M; ++i)
      for (int c = 1; c < kDepthChunks; ++c) {
        const T* part = partial + (static_cast<size_t>(c - 1) * M + i) * N;
        for (int64_t j = 0; j < N; ++j) C[i * ldc + off(j)] += part[j];
      }
    if (post.on) {  // after the last partial sum is in
#pragma omp parallel for schedule(static) num_threads(rt) if (rt > 1)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          const int64_t at = i * ldc + off(j);
          C[at] = post.apply(C[at], at);
        }
    }
    return;
  }

  bool by_rows = false, by_cols = false;
  if (nt > 1) {
    const bool rows_ok = ceil_div(M, MR) >= 2 * nt, cols_ok = ceil_div(N, NR) >= 2 * nt;
    // Splitting rows duplicates B packing (K*N per thread), columns A packing (M*K).
    if (rows_ok && (!cols_ok || double(K) * N <= double(M) * K)) by_rows = true;
    else if (cols_ok) by_cols = true;
    else if (ceil_div(M, MR) >= nt) by_rows = true;
    else if (ceil_div(N, NR) >= nt) by_cols = true;
    else nt = 1;
  }
  if (nt == 1) {
    serial(0, M, 0, N, 0, K, alpha, pack_a, pack_b, beta, C, ldc, off, bias, stat, post);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    int64_t lo, hi;
    if (by_rows) {
      split(ceil_div(M, MR), nth, tid, lo, hi);
      serial(lo * MR, std::min(M, hi * MR), 0, N, 0, K, alpha, pack_a, pack_b, beta, C, ldc, off,
             bias, stat, post);
    } else {
      split(ceil_div(N, NR), nth, tid, lo, hi);
      serial(0, M, lo * NR, std::min(N, hi * NR), 0, K, alpha, pack_a, pack_b, beta, C, ldc, off,
             bias, stat, post);
    }
  }
}

// Packs rows [i0, i0+mc) x cols [k0, k0+kc) of a strided matrix (op(A) = A or A^T).
template <class T>
struct StridedPackA {
  const T* A;
  int64_t lda;
  bool trans;
  // Read in place (serial's few-columns path) when not transposed.
  bool plain() const { return !trans; }
  const T* at(int64_t i, int64_t k) const { return A + i * lda + k; }
  void operator()(int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    for (int64_t ip = 0; ip < mc; ip += MR, dst += kc * MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip));
      if (trans) {
        // op(A)(i, k) = A[k*lda + i]: MR consecutive values per k.
        for (int64_t k = 0; k < kc; ++k) {
          const T* src = A + (k0 + k) * lda + i0 + ip;
          T* d = dst + k * MR;
          int i = 0;
          for (; i < mr; ++i) d[i] = src[i];
          for (; i < MR; ++i) d[i] = T(0);
        }
      } else if (mr == MR) {
        // All MR rows advance together: one contiguous MR-value store per k instead of
        // MR passes of strided stores over the panel.
        const T* src = A + (i0 + ip) * lda + k0;
        for (int64_t k = 0; k < kc; ++k) {
          T* d = dst + k * MR;
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) d[i] = src[i * lda + k];
        }
      } else {
        for (int i = 0; i < mr; ++i) {
          const T* src = A + (i0 + ip + i) * lda + k0;
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[k];
        }
        for (int i = mr; i < MR; ++i)
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = T(0);
      }
    }
  }
};

// Packs rows [k0, k0+kc) x cols [j0, j0+nc) of op(B) into NR-wide panels.
template <class T>
struct StridedPackB {
  const T* B;
  int64_t ldb;
  bool trans;
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* dst) const {
    constexpr int NR = Blk<T>::NR;
    for (int64_t jp = 0; jp < nc; jp += NR, dst += kc * NR) {
      const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp));
      if (!trans) {
        for (int64_t k = 0; k < kc; ++k) {
          const T* src = B + (k0 + k) * ldb + j0 + jp;
          T* d = dst + k * NR;
          if (nr == NR) {
            std::memcpy(d, src, sizeof(T) * NR);
          } else {
            int j = 0;
            for (; j < nr; ++j) d[j] = src[j];
            for (; j < NR; ++j) d[j] = T(0);
          }
        }
      } else {
        // op(B)(k, j) = B[j*ldb + k]: read each column's run of k, scatter by NR.
        for (int j = 0; j < nr; ++j) {
          const T* src = B + (j0 + jp + j) * ldb + k0;
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k];
        }
        for (int j = nr; j < NR; ++j)
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = T(0);
      }
    }
  }
};

}  // namespace gemm_detail
}  // namespace FC_ISA
}  // namespace fc
