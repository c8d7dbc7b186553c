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

}  // namespace jaclab::kernels::detail
