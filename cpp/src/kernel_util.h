// Helpers shared by the CPU kernel files (not part of the public headers).
#pragma once
#include <algorithm>
#include <type_traits>

#include "jaclab/array.h"
#include "jaclab/blas.h"
#include "jaclab/parallel.h"

namespace jaclab::kernels::detail {

// Calls f(T{}) with T = float or double for the dtype; TypeError for anything else.
template <class F>
void dispatch_float(DType dt, F&& f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::Float64) f(double{});
  else throw_type("expected a float32 or float64 tensor, got ", dtype_name(dt));
}

// Row-major C = alpha op(A) op(B) + beta C, one BLAS call on the calling thread (OpenBLAS is set
// to one thread: jaclab/parallel.h).
template <class T>
void gemm_serial(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    JL_CBLAS(sgemm)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    JL_CBLAS(dgemm)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// One GEMM's operands: row-major C = alpha op(A) op(B) + beta C.
template <class T>
struct GemmCall {
  CBLAS_TRANSPOSE ta, tb;
  int64_t M, N, K;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  T beta;
  T* C;
  int64_t ldc;
  T alpha = T(1);

  void run_serial() const { gemm_serial<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); }
  // Rows [i0, i1) of C: row i of op(A) is A + i * lda (not transposed) or column i of A.
  GemmCall rows(int64_t i0, int64_t i1) const {
    GemmCall c = *this;
    c.M = i1 - i0;
    c.A = ta == CblasNoTrans ? A + i0 * lda : A + i0;
    c.C = C + i0 * ldc;
    return c;
  }
  // Columns [j0, j1) of C: column j of op(B) is B + j (not transposed) or row j of B.
  GemmCall cols(int64_t j0, int64_t j1) const {
    GemmCall c = *this;
    c.N = j1 - j0;
    c.B = tb == CblasNoTrans ? B + j0 : B + j0 * ldb;
    c.C = C + j0;
    return c;
  }
};

// Products below this many multiply-adds (M N K) run on one thread: ~5 us of float32 work, where
// splitting stops paying for the hand-off to a spinning worker (1-2 us).
constexpr double kGemmSplitMin = double(1 << 18);

// Cuts C into one block per pool thread, blocks of rows, or of columns when C has more columns
// than rows, so each thread packs only its share of the longer operand (measured: rows are the
// better cut for square products), and calls block(cut) on each thread, where cut(g) is that
// block of any GemmCall g with C's shape. One block on the calling thread below kGemmSplitMin
// multiply-adds or with one thread. Every element of C is then computed by one BLAS call, in the
// same K order as the unsplit product: the bits are the same from run to run at a given thread
// count, and across counts where every block is whole tiles of the BLAS kernel (not always:
// OpenBLAS takes other kernel paths for some block sizes, see tests/test_threads.py).
template <class T, class F>
void split_c(const GemmCall<T>& c, F&& block) {
  const int threads = parallel::num_threads();
  if (threads < 2 || double(c.M) * c.N * c.K < kGemmSplitMin)
    return block([](const GemmCall<T>& g) { return g; });
  if (c.N > c.M)
    parallel::for_range(c.N, std::max<int64_t>(1, c.N / threads), [&](int64_t j0, int64_t j1) {
      block([j0, j1](const GemmCall<T>& g) { return g.cols(j0, j1); });
    }, 16);
  else
    parallel::for_range(c.M, std::max<int64_t>(1, c.M / threads), [&](int64_t i0, int64_t i1) {
      block([i0, i1](const GemmCall<T>& g) { return g.rows(i0, i1); });
    }, 16);
}

// Row-major C = alpha op(A) op(B) + beta C over the pool's threads (split_c), each block one
// single-threaded BLAS call.
template <class T>
void gemm(const GemmCall<T>& c) {
  split_c(c, [&](auto cut) { cut(c).run_serial(); });
}
template <class T>
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm(GemmCall<T>{ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, alpha});
}

// Each row of block `blk` of C (a split_c block of a C whose first element is c0, ldc apart) set
// to the row vector v (length: C's columns): a bias as the GEMM's initial C (beta = 1), written
// by the thread that then accumulates onto it, while the block is in its cache.
template <class T>
void fill_rows(const GemmCall<T>& blk, const T* c0, const T* v) {
  const int64_t col0 = (blk.C - c0) % blk.ldc;
  for (int64_t i = 0; i < blk.M; ++i) std::copy(v + col0, v + col0 + blk.N, blk.C + i * blk.ldc);
}

// one(i) for i in [0, n), the items side by side: one item per thread at a time. A GEMM called
// from inside the pool runs unsplit.
template <class F>
void side_by_side(int64_t n, F&& one) {
  parallel::for_range(n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) one(i);
  }, 1);
}

// `count` GEMMs C_i = alpha op(A_i) op(B_i) + beta C_i with A_i = A + i * stride_a (likewise B, C),
// side by side, one thread each (2-3x faster for attention-sized slices than splitting each
// small GEMM over all threads).
template <class T>
void gemm_batch_strided(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha,
                        const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta,
                        T* C, int64_t ldc, int64_t stride_c, int64_t count) {
  side_by_side(count, [&](int64_t i) {
    gemm<T>(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta, C + i * stride_c, ldc);
  });
}

// Two independent GEMMs side by side, each on one thread, where two GEMMs in turn would each be
// split over both threads.
template <class T>
void gemm_pair(const GemmCall<T>& x, const GemmCall<T>& y) {
  const GemmCall<T>* calls[2] = {&x, &y};
  side_by_side(2, [&](int64_t i) { gemm(*calls[i]); });
}

// Whether `count` GEMMs of M x N x K go faster as one batched call than one after another.
inline bool batch_pays(int64_t count, int64_t M, int64_t N, int64_t K) {
  return count >= 4 || (count >= 2 && M * N * K <= (int64_t{1} << 22));
}

}  // namespace jaclab::kernels::detail
