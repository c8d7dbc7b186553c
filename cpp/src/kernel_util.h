// Helpers shared by the CPU kernel files (not part of the public headers).
#pragma once
#include <type_traits>

#include "jaclab/array.h"
#include "jaclab/blas.h"

namespace jaclab::kernels::detail {

// Calls f(T{}) with T = float or double for the dtype; TypeError for anything else.
template <class F>
void dispatch_float(DType dt, F&& f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::Float64) f(double{});
  else throw_type("expected a float32 or float64 tensor, got ", dtype_name(dt));
}

// Row-major C = alpha op(A) op(B) + beta C through the BLAS.
template <class T>
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    JL_CBLAS(sgemm)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    JL_CBLAS(dgemm)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// `count` GEMMs C_i = alpha op(A_i) op(B_i) + beta C_i with A_i = A + i * stride_a (likewise B, C)
// in one call: OpenBLAS runs the small ones side by side, one thread each, instead of splitting
// every small GEMM over all threads (2-3x faster for attention-sized slices).
template <class T>
void gemm_batch_strided(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha,
                        const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta,
                        T* C, int64_t ldc, int64_t stride_c, int64_t count) {
  if constexpr (std::is_same_v<T, float>)
    JL_CBLAS(sgemm_batch_strided)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
                                  ldc, stride_c, count);
  else
    JL_CBLAS(dgemm_batch_strided)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
                                  ldc, stride_c, count);
}

// One GEMM's operands (row-major C = op(A) op(B) + beta C), for gemm_pair.
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
};

// Two independent GEMMs in one BLAS batch call: OpenBLAS runs them side by side, each on one
// thread, where two GEMMs in turn would each be split over both threads.
template <class T>
void gemm_pair(const GemmCall<T>& x, const GemmCall<T>& y) {
  CBLAS_TRANSPOSE ta[2] = {x.ta, y.ta}, tb[2] = {x.tb, y.tb};
  blasint M[2] = {blasint(x.M), blasint(y.M)}, N[2] = {blasint(x.N), blasint(y.N)}, K[2] = {blasint(x.K), blasint(y.K)};
  blasint lda[2] = {blasint(x.lda), blasint(y.lda)}, ldb[2] = {blasint(x.ldb), blasint(y.ldb)};
  blasint ldc[2] = {blasint(x.ldc), blasint(y.ldc)}, sizes[2] = {1, 1};
  T alpha[2] = {T(1), T(1)}, beta[2] = {x.beta, y.beta};
  const T* A[2] = {x.A, y.A};
  const T* B[2] = {x.B, y.B};
  T* C[2] = {x.C, y.C};
  if constexpr (std::is_same_v<T, float>)
    JL_CBLAS(sgemm_batch)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2, sizes);
  else
    JL_CBLAS(dgemm_batch)(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2, sizes);
}

// Whether `count` GEMMs of M x N x K go faster as one batched call than one after another.
inline bool batch_pays(int64_t count, int64_t M, int64_t N, int64_t K) {
  return count >= 4 || (count >= 2 && M * N * K <= (int64_t{1} << 22));
}

}  // namespace jaclab::kernels::detail
