// Fused attention kernels (see attention.h for the API and the math).
//
// Shapes: one slice bh of q is (T, D), of k and v (S, D), D = dh = dv. No T×S matrix ever reaches global memory:
// each block owns a tile of rows (queries, or keys for the dk/dv kernel) and streams over tiles of the other
// sequence, keeping its accumulators in registers and its softmax as a running row max m and sum l (online softmax).
//
// Thread layout, shared by every kernel: 256 threads = 16 row groups (ty) × 16 lanes (tx). A block's row tile has
// BR = 16·RM rows, a step over the other sequence BC = 16·RN columns. Thread (ty, tx) holds
//   score tile:  rows ty·RM + r (r < RM)  ×  columns tx + 16·c (c < RN)
//   output tile: rows ty·RM + r           ×  RV = D/16 columns vcol(tx, c)
// so the 16 lanes sharing a row are one half-warp and row reductions are shuffles. Operands come from shared memory
// in 16-byte vectors (float4 / double2); rows are padded by one vector so the lanes of a phase hit distinct banks.
// Scores are kept in log2 units (pre-multiplied by log2 e) so every exponential is one exp2.
// Global->shared copies are cp.async when all pointers are 16-byte aligned; the forward overlaps them with the
// math (K of the next tile during P V, V during Q Kᵀ), the other kernels wait for each tile before computing.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <cuda_pipeline.h>

#include "attention.h"

namespace jaclab::cuda {
namespace {

constexpr int NT = 256;                  // threads per block: 16 (ty) × 16 (tx)
constexpr size_t kMaxSmem = 163 * 1024;  // opt-in shared memory per block on sm_80; every tile shape fits it

template <class T> constexpr T kLog2e = T(1.4426950408889634074);
template <class T> constexpr T kLn2 = T(0.6931471805599453094);

// One 16-byte vector of T, the unit of shared- and global-memory traffic.
template <class T> struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};
template <class T> __device__ __forceinline__ Pack<T> ld(const T* p) { return *reinterpret_cast<const Pack<T>*>(p); }

__device__ __forceinline__ float ex2(float x) { return exp2f(x); }
__device__ __forceinline__ double ex2(double x) { return exp2(x); }

// Geometry of one kernel's tiles; LD pads a (rows, D) tile, LDP a (BR, BC) probability tile.
template <class T, int D_, int RM_, int RN_> struct Tile {
  using Elem = T;
  static constexpr int D = D_, RM = RM_, RN = RN_, RV = D / 16;
  static constexpr int BR = 16 * RM, BC = 16 * RN, V = Pack<T>::N;
  static constexpr int LD = D + V, LDP = BC + V;
};

// Rows (RM) and score columns (RN) per thread for each kernel: float D <= 64 uses 8×4 / 4×4 micro-tiles so two
// blocks fit an SM (≈128 registers, ≈104 KB shared); larger D and double shrink tiles to stay under kMaxSmem.
template <class T, int D> struct Cfg {
  static constexpr bool f = sizeof(T) == 4, big = D > 64;
  static constexpr int fwd_rm = f ? (big ? 4 : 8) : 2, fwd_rn = f ? 4 : 2;
  static constexpr int jvp_rm = f ? (big ? 2 : 4) : (big ? 1 : 2), jvp_rn = jvp_rm;
  static constexpr int kv_rm = f ? (big ? 2 : 4) : 2, kv_rn = kv_rm;
  static constexpr int q_rm = f ? 4 : 2, q_rn = q_rm;
};

// Every kernel takes one argument block; fields a kernel does not use are null.
template <class T> struct Args {
  const T *q, *k, *v;                      // inputs
  const T *qd, *kd, *vd;                   // jvp tangents (null = zero)
  const T *lse, *g, *delta;                // backward: saved lse, cotangent of o, delta = rowsum(g∘o)
  T *o, *o_dot, *lse_out, *gq, *gk, *gv;   // outputs (null = not wanted)
  int64_t nq, nk;                          // T queries, S keys per slice
  T scale;                                 // 1/sqrt(dh)
  bool causal, vec;                        // vec: every pointer is 16-byte aligned, so global loads are vectors
};

__device__ __forceinline__ int tx_() { return threadIdx.x & 15; }
__device__ __forceinline__ int ty_() { return threadIdx.x >> 4; }

// Output column of a thread's c-th accumulator: runs of V adjacent columns when they fill whole vectors (the
// B operand row is then read with vector loads), else strided by 16.
template <class T, int RV> __device__ __forceinline__ int vcol(int c) {
  constexpr int V = Pack<T>::N;
  if constexpr (RV % V == 0) return (c / V) * (16 * V) + tx_() * V + c % V;
  else return tx_() + 16 * c;
}

// Blocks are numbered slice-major so consecutive blocks share a slice (its k, v stay in L2); inside a slice the
// last row tile runs first, as under a causal mask it is the longest.
__device__ __forceinline__ void block_tile(int64_t ntiles, int64_t& bh, int64_t& tile) {
  bh = blockIdx.x / ntiles;
  tile = ntiles - 1 - blockIdx.x % ntiles;
}

// sm (ROWS, D+V) <- rows r0..r0+ROWS of the (n, D) matrix g; rows past n become zeros (finite, so masked
// probabilities times them stay 0). Consecutive threads copy consecutive vectors of a row: coalesced. When every
// pointer is aligned the copies are cp.async (sm_80+): they land only after the caller's copies_done()/
// __pipeline_wait_prior, which lets a kernel overlap the next tile's load with the current tile's math.
template <class T, int ROWS, int D>
__device__ void load_tile(T* sm, const T* g, int64_t r0, int64_t n, bool vec) {
  constexpr int V = Pack<T>::N, CH = D / V;
  for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
    const int r = i / CH, c = (i % CH) * V;
    T* dst = sm + r * (D + V) + c;
    const T* src = g + (r0 + r) * D + c;
    if (r0 + r < n && vec) {
      __pipeline_memcpy_async(dst, src, 16);
      continue;
    }
    Pack<T> x{};
    if (r0 + r < n)
      for (int e = 0; e < V; ++e) x.v[e] = src[e];
    *reinterpret_cast<Pack<T>*>(dst) = x;
  }
}
// Waits for this thread's outstanding cp.async copies (a __syncthreads must follow before others read them).
__device__ __forceinline__ void copies_done() {
  __pipeline_commit();
  __pipeline_wait_prior(0);
}

// acc[r][c] += Σ_{k<K} A[ty·RM + r][k] · B[tx + 16c][k]      (A Bᵀ: rows of A against rows of B)
template <class T, int RM, int RN, int K, int LDA, int LDB>
__device__ __forceinline__ void mm_abt(T (&acc)[RM][RN], const T* A, const T* B) {
  constexpr int V = Pack<T>::N;
  A += ty_() * RM * LDA;
  B += tx_() * LDB;
#pragma unroll 2  // full unrolling hoists too many loads and spills
  for (int k = 0; k < K; k += V) {
    Pack<T> b[RN];
#pragma unroll
    for (int c = 0; c < RN; ++c) b[c] = ld(B + 16 * c * LDB + k);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const Pack<T> a = ld(A + r * LDA + k);
#pragma unroll
      for (int e = 0; e < V; ++e)
#pragma unroll
        for (int c = 0; c < RN; ++c) acc[r][c] += a.v[e] * b[c].v[e];
    }
  }
}

// acc[r][c] += Σ_{k<K} A[ty·RM + r][k] · B[k][vcol(c)]       (A B)
template <class T, int RM, int RV, int K, int LDA, int LDB>
__device__ __forceinline__ void mm_ab(T (&acc)[RM][RV], const T* A, const T* B) {
  constexpr int V = Pack<T>::N;
  A += ty_() * RM * LDA;
#pragma unroll 2  // full unrolling hoists too many loads and spills
  for (int k0 = 0; k0 < K; k0 += V) {
    Pack<T> a[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) a[r] = ld(A + r * LDA + k0);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const T* row = B + (k0 + e) * LDB;
      T b[RV];
      if constexpr (RV % V == 0) {
#pragma unroll
        for (int g = 0; g < RV / V; ++g) {
          const Pack<T> p = ld(row + g * 16 * V + tx_() * V);
#pragma unroll
          for (int i = 0; i < V; ++i) b[g * V + i] = p.v[i];
        }
      } else {
#pragma unroll
        for (int c = 0; c < RV; ++c) b[c] = row[tx_() + 16 * c];
      }
#pragma unroll
      for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int c = 0; c < RV; ++c) acc[r][c] += a[r].v[e] * b[c];
    }
  }
}

// Reductions over the 16 lanes of a row (xor offsets below 16 stay inside the half-warp).
template <class T> __device__ __forceinline__ T row_max(T x) {
  for (int o = 8; o; o >>= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
template <class T> __device__ __forceinline__ T row_sum(T x) {
  for (int o = 8; o; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// s <- s·c2 (log2 units); where `edge`, hide key j from query t unless j < S and (not causal or j <= t + off).
// Rows are queries (t0 + ty·RM + r), columns keys (j0 + tx + 16c).
template <class T, int RM, int RN>
__device__ __forceinline__ void scale_mask(T (&s)[RM][RN], T c2, int64_t t0, int64_t j0, int64_t nk, int64_t off,
                                           bool causal, bool edge) {
#pragma unroll
  for (int r = 0; r < RM; ++r)
#pragma unroll
    for (int c = 0; c < RN; ++c) {
      s[r][c] *= c2;
      const int64_t t = t0 + ty_() * RM + r, j = j0 + tx_() + 16 * c;
      if (edge && (j >= nk || (causal && j > t + off))) s[r][c] = T(-INFINITY);
    }
}

// Online softmax over one score tile (log2 units, hidden = -inf): updates the running row max m, turns s into
// p = 2^(s - m) and sets alpha = 2^(m_old - m_new), the factor rescaling everything accumulated so far.
// While a row has seen no visible key m stays -inf; the exponents then use 0 so p = alpha = 0 instead of NaN.
template <class T, int RM, int RN>
__device__ __forceinline__ void softmax_step(T (&s)[RM][RN], T (&m)[RM], T (&alpha)[RM]) {
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    T mx = s[r][0];
#pragma unroll
    for (int c = 1; c < RN; ++c) mx = fmax(mx, s[r][c]);
    const T mn = fmax(m[r], row_max(mx));
    const T base = mn == T(-INFINITY) ? T(0) : mn;
    alpha[r] = ex2(m[r] - base);
    m[r] = mn;
#pragma unroll
    for (int c = 0; c < RN; ++c) s[r][c] = ex2(s[r][c] - base);
  }
}

// Keys needed by the query tile starting at t0: all S, or under the causal mask those j <= t0 + BR - 1 + off.
__device__ __forceinline__ int64_t key_end(int64_t t0, int br, int64_t nk, int64_t off, bool causal) {
  return causal && t0 + br + off < nk ? t0 + br + off : nk;
}
// Whether a (BR queries) × (BC keys) tile at (t0, j0) has any hidden entry.
__device__ __forceinline__ bool is_edge(int64_t t0, int64_t j0, int bc, int64_t nk, int64_t off, bool causal) {
  return j0 + bc > nk || (causal && j0 + bc - 1 > t0 + off);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward: block = (slice, BR queries). Per key tile: s = Q Kᵀ, online softmax, o = o·alpha + P V.
template <class G> constexpr size_t fwd_smem() {
  return sizeof(typename G::Elem) * ((G::BR + 2 * G::BC) * G::LD + G::BR * G::LDP);
}
template <class T, int D, int RM, int RN>
__global__ void __launch_bounds__(NT, 2) fwd_kernel(const Args<T> a) {
  using G = Tile<T, D, RM, RN>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // (BR, LD)
  T* Ks = Qs + G::BR * G::LD;          // (BC, LD)
  T* Vs = Ks + G::BC * G::LD;          // (BC, LD)
  T* Ps = Vs + G::BC * G::LD;          // (BR, LDP)
  int64_t bh, tile;
  block_tile((a.nq + G::BR - 1) / G::BR, bh, tile);
  const int64_t t0 = tile * G::BR, off = a.nk - a.nq;
  const T *k = a.k + bh * a.nk * D, *v = a.v + bh * a.nk * D;
  const int64_t end = key_end(t0, G::BR, a.nk, off, a.causal);
  // Pipeline: K(j+1) is copied while P V(j) runs, V(j+1) while Q K(j+1)ᵀ runs; commit groups go Q+K(0), V(0),
  // K(1), V(1), ... so "all but the newest group landed" means K(j) has, and V(j) may still be in flight.
  load_tile<T, G::BR, D>(Qs, a.q + bh * a.nq * D, t0, a.nq, a.vec);
  load_tile<T, G::BC, D>(Ks, k, 0, a.nk, a.vec);
  __pipeline_commit();
  load_tile<T, G::BC, D>(Vs, v, 0, a.nk, a.vec);
  __pipeline_commit();

  T o[RM][G::RV] = {}, m[RM], l[RM] = {}, alpha[RM];  // l: this thread's part of the row sum
#pragma unroll
  for (int r = 0; r < RM; ++r) m[r] = T(-INFINITY);
  const T c2 = a.scale * kLog2e<T>;
  for (int64_t j0 = 0; j0 < end; j0 += G::BC) {
    __pipeline_wait_prior(1);
    __syncthreads();  // Q, K(j) landed; the previous P V is done with Ps
    T s[RM][RN] = {};
    mm_abt<T, RM, RN, D, G::LD, G::LD>(s, Qs, Ks);
    scale_mask(s, c2, t0, j0, a.nk, off, a.causal, is_edge(t0, j0, G::BC, a.nk, off, a.causal));
    softmax_step(s, m, alpha);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      l[r] *= alpha[r];
#pragma unroll
      for (int c = 0; c < G::RV; ++c) o[r][c] *= alpha[r];
#pragma unroll
      for (int c = 0; c < RN; ++c) {
        l[r] += s[r][c];
        Ps[(ty_() * RM + r) * G::LDP + tx_() + 16 * c] = s[r][c];
      }
    }
    __pipeline_wait_prior(0);
    __syncthreads();  // V(j) landed, P complete, K(j) free
    if (j0 + G::BC < end) load_tile<T, G::BC, D>(Ks, k, j0 + G::BC, a.nk, a.vec);
    __pipeline_commit();
    mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(o, Ps, Vs);
    __syncthreads();  // V(j) free
    if (j0 + G::BC < end) load_tile<T, G::BC, D>(Vs, v, j0 + G::BC, a.nk, a.vec);
    __pipeline_commit();
  }
  __pipeline_wait_prior(0);  // with no key tile at all the prologue copies are still in flight
  for (int r = 0; r < RM; ++r) {
    const T lr = row_sum(l[r]);
    const int64_t t = t0 + ty_() * RM + r;
    if (t >= a.nq) continue;
    const T inv = lr > 0 ? T(1) / lr : T(0);
    T* orow = a.o + (bh * a.nq + t) * D;
#pragma unroll
    for (int c = 0; c < G::RV; ++c) orow[vcol<T, G::RV>(c)] = o[r][c] * inv;
    if (a.lse_out && tx_() == 0) a.lse_out[bh * a.nq + t] = lr > 0 ? m[r] * kLn2<T> + log(lr) : T(-INFINITY);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JVP: like the forward, plus dS = (Q̇ Kᵀ + Q K̇ᵀ)·scale. With unnormalized p = 2^(s-m), l = Σp, cs = Σ p·dS,
//   o = (Σ p v)/l,   ȯ = (Σ p·dS v + Σ p v̇)/l - (cs/l)·o.
// P and P∘dS overwrite the K and K̇ tiles once the scores are done (that keeps two blocks per SM).
template <class G> constexpr size_t jvp_smem() {
  const size_t kp = G::BC * G::LD > G::BR * G::LDP ? G::BC * G::LD : G::BR * G::LDP;
  return sizeof(typename G::Elem) * (2 * G::BR * G::LD + 2 * kp + 2 * G::BC * G::LD);
}
template <class T, int D, int RM, int RN>
__global__ void __launch_bounds__(NT, 2) jvp_kernel(const Args<T> a) {
  using G = Tile<T, D, RM, RN>;
  constexpr int KP = G::BC * G::LD > G::BR * G::LDP ? G::BC * G::LD : G::BR * G::LDP;
  extern __shared__ __align__(16) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // (BR, LD)
  T* Qds = Qs + G::BR * G::LD;         // (BR, LD)
  T* Ks = Qds + G::BR * G::LD;         // (BC, LD), then P (BR, LDP)
  T* Kds = Ks + KP;                    // (BC, LD), then P∘dS (BR, LDP)
  T* Vs = Kds + KP;                    // (BC, LD)
  T* Vds = Vs + G::BC * G::LD;         // (BC, LD)
  int64_t bh, tile;
  block_tile((a.nq + G::BR - 1) / G::BR, bh, tile);
  const int64_t t0 = tile * G::BR, off = a.nk - a.nq, qo = bh * a.nq * D, ko = bh * a.nk * D;
  const bool has_ds = a.qd || a.kd;
  load_tile<T, G::BR, D>(Qs, a.q + qo, t0, a.nq, a.vec);
  if (a.qd) load_tile<T, G::BR, D>(Qds, a.qd + qo, t0, a.nq, a.vec);
  copies_done();

  // o: Σ p v, od: Σ p·dS v + Σ p v̇; l, cs: this thread's parts of Σ p and Σ p·dS.
  T o[RM][G::RV] = {}, od[RM][G::RV] = {}, m[RM], l[RM] = {}, cs[RM] = {}, alpha[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) m[r] = T(-INFINITY);
  const T c2 = a.scale * kLog2e<T>;
  for (int64_t j0 = 0, end = key_end(t0, G::BR, a.nk, off, a.causal); j0 < end; j0 += G::BC) {
    __syncthreads();
    load_tile<T, G::BC, D>(Ks, a.k + ko, j0, a.nk, a.vec);
    load_tile<T, G::BC, D>(Vs, a.v + ko, j0, a.nk, a.vec);
    if (a.kd) load_tile<T, G::BC, D>(Kds, a.kd + ko, j0, a.nk, a.vec);
    if (a.vd) load_tile<T, G::BC, D>(Vds, a.vd + ko, j0, a.nk, a.vec);
    copies_done();
    __syncthreads();
    T s[RM][RN] = {}, ds[RM][RN] = {};
    mm_abt<T, RM, RN, D, G::LD, G::LD>(s, Qs, Ks);
    if (a.qd) mm_abt<T, RM, RN, D, G::LD, G::LD>(ds, Qds, Ks);
    if (a.kd) mm_abt<T, RM, RN, D, G::LD, G::LD>(ds, Qs, Kds);
    __syncthreads();  // K and K̇ are dead: their space now takes P and P∘dS
    scale_mask(s, c2, t0, j0, a.nk, off, a.causal, is_edge(t0, j0, G::BC, a.nk, off, a.causal));
    softmax_step(s, m, alpha);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      l[r] *= alpha[r];
      cs[r] *= alpha[r];
#pragma unroll
      for (int c = 0; c < G::RV; ++c) o[r][c] *= alpha[r], od[r][c] *= alpha[r];
#pragma unroll
      for (int c = 0; c < RN; ++c) {
        const T pds = s[r][c] * ds[r][c] * a.scale;  // hidden keys have p = 0, so p·dS = 0
        l[r] += s[r][c];
        cs[r] += pds;
        const int i = (ty_() * RM + r) * G::LDP + tx_() + 16 * c;
        Ks[i] = s[r][c];
        Kds[i] = pds;
      }
    }
    __syncthreads();
    mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(o, Ks, Vs);
    if (has_ds) mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(od, Kds, Vs);
    if (a.vd) mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(od, Ks, Vds);
  }
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const T lr = row_sum(l[r]), cr = row_sum(cs[r]);
    const int64_t t = t0 + ty_() * RM + r;
    if (t >= a.nq) continue;
    const T inv = lr > 0 ? T(1) / lr : T(0), ci = cr * inv;
    T *orow = a.o + (bh * a.nq + t) * D, *odrow = a.o_dot + (bh * a.nq + t) * D;
#pragma unroll
    for (int c = 0; c < G::RV; ++c) {
      const int d = vcol<T, G::RV>(c);
      orow[d] = o[r][c] * inv;
      odrow[d] = (od[r][c] - ci * o[r][c]) * inv;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward. delta[t] = Σ_d g[t][d]·o[t][d] (one warp per row): the rowsum(P∘gP) term of the softmax backward.
template <class T, int D> __global__ void delta_kernel(const T* g, const T* o, T* delta, int64_t rows) {
  const int64_t row = blockIdx.x * int64_t(NT / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  T s = 0;
  for (int d = threadIdx.x % 32; d < D; d += 32) s += g[row * D + d] * o[row * D + d];
  for (int w = 16; w; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
  if (threadIdx.x % 32 == 0) delta[row] = s;
}

// dK, dV: block = (slice, BR keys), looping over query tiles (rows here are keys, columns queries):
//   Pᵀ = 2^(K Qᵀ·c2 - lse2),  gv += Pᵀ G,  gSᵀ = Pᵀ∘(V Gᵀ - delta),  gk += gSᵀ Q (·scale at the end).
template <class G> constexpr size_t kv_smem() {
  return sizeof(typename G::Elem) * (2 * (G::BR + G::BC) * G::LD + 2 * G::BR * G::LDP + 2 * G::BC);
}
template <class T, int D, int RM, int RN>
__global__ void __launch_bounds__(NT, 2) bwd_kv_kernel(const Args<T> a) {
  using G = Tile<T, D, RM, RN>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);  // (BR, LD)
  T* Vs = Ks + G::BR * G::LD;          // (BR, LD)
  T* Qs = Vs + G::BR * G::LD;          // (BC, LD)
  T* Gs = Qs + G::BC * G::LD;          // (BC, LD)
  T* Ps = Gs + G::BC * G::LD;          // (BR, LDP)  Pᵀ
  T* Ss = Ps + G::BR * G::LDP;         // (BR, LDP)  gSᵀ
  T* Ls = Ss + G::BR * G::LDP;         // (BC)       lse of the query tile, log2 units (0 for an empty row)
  T* Ds = Ls + G::BC;                  // (BC)       delta of the query tile
  int64_t bh, tile;
  block_tile((a.nk + G::BR - 1) / G::BR, bh, tile);
  const int64_t j0 = tile * G::BR, off = a.nk - a.nq, qo = bh * a.nq * D, ko = bh * a.nk * D;
  load_tile<T, G::BR, D>(Ks, a.k + ko, j0, a.nk, a.vec);
  load_tile<T, G::BR, D>(Vs, a.v + ko, j0, a.nk, a.vec);
  copies_done();

  T gk[RM][G::RV] = {}, gv[RM][G::RV] = {};
  const T c2 = a.scale * kLog2e<T>;
  // Causal: key j is seen by queries t >= j - off only.
  const int64_t tbeg = a.causal && j0 - off > 0 ? (j0 - off) / G::BC * G::BC : 0;
  for (int64_t t0 = tbeg; t0 < a.nq; t0 += G::BC) {
    __syncthreads();
    load_tile<T, G::BC, D>(Qs, a.q + qo, t0, a.nq, a.vec);
    load_tile<T, G::BC, D>(Gs, a.g + qo, t0, a.nq, a.vec);
    for (int i = threadIdx.x; i < G::BC; i += NT) {
      const int64_t t = t0 + i;
      const T L = t < a.nq ? a.lse[bh * a.nq + t] : T(0);
      Ls[i] = L == T(-INFINITY) ? T(0) : L * kLog2e<T>;
      Ds[i] = t < a.nq ? a.delta[bh * a.nq + t] : T(0);
    }
    copies_done();
    __syncthreads();
    T s[RM][RN] = {}, gp[RM][RN] = {};
    mm_abt<T, RM, RN, D, G::LD, G::LD>(s, Ks, Qs);
    if (a.gk) mm_abt<T, RM, RN, D, G::LD, G::LD>(gp, Vs, Gs);
    const bool edge = t0 + G::BC > a.nq || j0 + G::BR > a.nk || (a.causal && j0 + G::BR - 1 > t0 + off);
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < RN; ++c) {
        const int qc = tx_() + 16 * c;
        const int64_t j = j0 + ty_() * RM + r, t = t0 + qc;
        const bool vis = !edge || (j < a.nk && t < a.nq && (!a.causal || j <= t + off));
        const T p = vis ? ex2(s[r][c] * c2 - Ls[qc]) : T(0);
        Ps[(ty_() * RM + r) * G::LDP + qc] = p;
        Ss[(ty_() * RM + r) * G::LDP + qc] = p * (gp[r][c] - Ds[qc]);
      }
    __syncthreads();
    if (a.gv) mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(gv, Ps, Gs);
    if (a.gk) mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(gk, Ss, Qs);
  }
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int64_t j = j0 + ty_() * RM + r;
    if (j >= a.nk) continue;
#pragma unroll
    for (int c = 0; c < G::RV; ++c) {
      const int d = vcol<T, G::RV>(c);
      if (a.gk) a.gk[ko + j * D + d] = gk[r][c] * a.scale;
      if (a.gv) a.gv[ko + j * D + d] = gv[r][c];
    }
  }
}

// dQ: block = (slice, BR queries), looping over key tiles:
//   P = 2^(Q Kᵀ·c2 - lse2),  gS = P∘(G Vᵀ - delta),  gq += gS K (·scale at the end).
template <class G> constexpr size_t q_smem() {
  return sizeof(typename G::Elem) * (2 * (G::BR + G::BC) * G::LD + G::BR * G::LDP);
}
template <class T, int D, int RM, int RN>
__global__ void __launch_bounds__(NT, 2) bwd_q_kernel(const Args<T> a) {
  using G = Tile<T, D, RM, RN>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);  // (BR, LD)
  T* Gs = Qs + G::BR * G::LD;          // (BR, LD)
  T* Ks = Gs + G::BR * G::LD;          // (BC, LD)
  T* Vs = Ks + G::BC * G::LD;          // (BC, LD)
  T* Ss = Vs + G::BC * G::LD;          // (BR, LDP)  gS
  int64_t bh, tile;
  block_tile((a.nq + G::BR - 1) / G::BR, bh, tile);
  const int64_t t0 = tile * G::BR, off = a.nk - a.nq, qo = bh * a.nq * D, ko = bh * a.nk * D;
  load_tile<T, G::BR, D>(Qs, a.q + qo, t0, a.nq, a.vec);
  load_tile<T, G::BR, D>(Gs, a.g + qo, t0, a.nq, a.vec);
  copies_done();
  T L[RM], Dl[RM], gq[RM][G::RV] = {};
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int64_t t = t0 + ty_() * RM + r;
    const T lse = t < a.nq ? a.lse[bh * a.nq + t] : T(0);
    L[r] = lse == T(-INFINITY) ? T(0) : lse * kLog2e<T>;  // an empty row has every score hidden: p = 0
    Dl[r] = t < a.nq ? a.delta[bh * a.nq + t] : T(0);
  }
  const T c2 = a.scale * kLog2e<T>;
  for (int64_t j0 = 0, end = key_end(t0, G::BR, a.nk, off, a.causal); j0 < end; j0 += G::BC) {
    __syncthreads();
    load_tile<T, G::BC, D>(Ks, a.k + ko, j0, a.nk, a.vec);
    load_tile<T, G::BC, D>(Vs, a.v + ko, j0, a.nk, a.vec);
    copies_done();
    __syncthreads();
    T s[RM][RN] = {}, gp[RM][RN] = {};
    mm_abt<T, RM, RN, D, G::LD, G::LD>(s, Qs, Ks);
    mm_abt<T, RM, RN, D, G::LD, G::LD>(gp, Gs, Vs);
    scale_mask(s, c2, t0, j0, a.nk, off, a.causal, is_edge(t0, j0, G::BC, a.nk, off, a.causal));
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < RN; ++c)
        Ss[(ty_() * RM + r) * G::LDP + tx_() + 16 * c] = ex2(s[r][c] - L[r]) * (gp[r][c] - Dl[r]);
    __syncthreads();
    mm_ab<T, RM, G::RV, G::BC, G::LDP, G::LD>(gq, Ss, Ks);
  }
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int64_t t = t0 + ty_() * RM + r;
    if (t >= a.nq) continue;
#pragma unroll
    for (int c = 0; c < G::RV; ++c) a.gq[qo + t * D + vcol<T, G::RV>(c)] = gq[r][c] * a.scale;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Host side.
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("attention: ") + what + ": " + cudaGetErrorString(e));
}

template <class T> bool aligned(const T* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T> Args<T> make_args(const T* q, const T* k, const T* v, int64_t nq, int64_t nk, int dh, bool causal) {
  Args<T> a{};
  a.q = q, a.k = k, a.v = v, a.nq = nq, a.nk = nk, a.causal = causal;
  a.scale = T(1) / std::sqrt(T(dh));
  return a;
}
template <class T> void set_vec(Args<T>& a) {
  a.vec = aligned(a.q) && aligned(a.k) && aligned(a.v) && aligned(a.qd) && aligned(a.kd) && aligned(a.vd) &&
          aligned(a.lse) && aligned(a.g) && aligned(a.delta);
}

// One launch: grid of `blocks` × NT threads with `smem` bytes of dynamic shared memory.
template <class T>
void launch(void (*kernel)(const Args<T>), size_t smem, int64_t blocks, const Args<T>& a, cudaStream_t st,
            const char* name) {
  if (blocks <= 0) return;
  if (blocks > INT32_MAX) throw std::runtime_error(std::string("attention: ") + name + ": too many blocks");
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), name);
  kernel<<<unsigned(blocks), NT, smem, st>>>(a);
  check(cudaGetLastError(), name);
}

// Calls f(std::integral_constant<int, D>) for the supported head size D = dh = dv.
template <class F> void with_head(int dh, int dv, F&& f) {
  if (!attention_supported(dh, dv))
    throw std::runtime_error("attention: fused kernels need dh == dv in {16, 32, 64, 128}, got dh=" +
                             std::to_string(dh) + " dv=" + std::to_string(dv));
  switch (dh) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default: return f(std::integral_constant<int, 128>{});
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

bool attention_supported(int dh, int dv) { return dh == dv && (dh == 16 || dh == 32 || dh == 64 || dh == 128); }

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* o, T* lse, int64_t BH, int64_t T_, int64_t S, int dh,
                       int dv, bool causal, cudaStream_t stream) {
  Args<T> a = make_args(q, k, v, T_, S, dh, causal);
  a.o = o, a.lse_out = lse;
  set_vec(a);
  with_head(dh, dv, [&](auto d) {
    constexpr int D = decltype(d)::value;
    using G = Tile<T, D, Cfg<T, D>::fwd_rm, Cfg<T, D>::fwd_rn>;
    static_assert(fwd_smem<G>() <= kMaxSmem);
    launch(fwd_kernel<T, D, G::RM, G::RN>, fwd_smem<G>(), cdiv(T_, G::BR) * BH, a, stream, "forward kernel");
  });
}

template <class T>
void attention_jvp(const T* q, const T* k, const T* v, const T* q_dot, const T* k_dot, const T* v_dot, T* o, T* o_dot,
                   int64_t BH, int64_t T_, int64_t S, int dh, int dv, bool causal, cudaStream_t stream) {
  Args<T> a = make_args(q, k, v, T_, S, dh, causal);
  a.qd = q_dot, a.kd = k_dot, a.vd = v_dot, a.o = o, a.o_dot = o_dot;
  set_vec(a);
  with_head(dh, dv, [&](auto d) {
    constexpr int D = decltype(d)::value;
    using G = Tile<T, D, Cfg<T, D>::jvp_rm, Cfg<T, D>::jvp_rn>;
    static_assert(jvp_smem<G>() <= kMaxSmem);
    launch(jvp_kernel<T, D, G::RM, G::RN>, jvp_smem<G>(), cdiv(T_, G::BR) * BH, a, stream, "jvp kernel");
  });
}

template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* g, T* gq, T* gk, T* gv,
                        int64_t BH, int64_t T_, int64_t S, int dh, int dv, bool causal, cudaStream_t stream) {
  if (!gq && !gk && !gv) return;
  Args<T> a = make_args(q, k, v, T_, S, dh, causal);
  a.lse = lse, a.g = g, a.gq = gq, a.gk = gk, a.gv = gv;
  with_head(dh, dv, [&](auto d) {
    constexpr int D = decltype(d)::value;
    using C = Cfg<T, D>;
    using KV = Tile<T, D, C::kv_rm, C::kv_rn>;
    using Q = Tile<T, D, C::q_rm, C::q_rn>;
    static_assert(kv_smem<KV>() <= kMaxSmem && q_smem<Q>() <= kMaxSmem);
    T* delta = nullptr;
    const int64_t rows = BH * T_;
    if (rows > 0) {
      check(cudaMallocAsync(reinterpret_cast<void**>(&delta), rows * sizeof(T), stream), "backward scratch");
      delta_kernel<T, D><<<unsigned(cdiv(rows, NT / 32)), NT, 0, stream>>>(g, o, delta, rows);
      check(cudaGetLastError(), "backward delta kernel");
    }
    a.delta = delta;
    set_vec(a);
    try {
      if (gk || gv) launch(bwd_kv_kernel<T, D, KV::RM, KV::RN>, kv_smem<KV>(), cdiv(S, KV::BR) * BH, a, stream,
                           "backward dk/dv kernel");
      if (gq) launch(bwd_q_kernel<T, D, Q::RM, Q::RN>, q_smem<Q>(), cdiv(T_, Q::BR) * BH, a, stream,
                     "backward dq kernel");
    } catch (...) {
      if (delta) cudaFreeAsync(delta, stream);
      throw;
    }
    if (delta) check(cudaFreeAsync(delta, stream), "backward scratch");
  });
}

#define JACLAB_ATTENTION_INSTANTIATE(T)                                                                           \
  template void attention_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, int, int,  \
                                     bool, cudaStream_t);                                                          \
  template void attention_jvp<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, int64_t,     \
                                 int64_t, int64_t, int, int, bool, cudaStream_t);                                  \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,     \
                                      int64_t, int64_t, int64_t, int, int, bool, cudaStream_t);
JACLAB_ATTENTION_INSTANTIATE(float)
JACLAB_ATTENTION_INSTANTIATE(double)
#undef JACLAB_ATTENTION_INSTANTIATE

}  // namespace jaclab::cuda
