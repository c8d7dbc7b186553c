// The one place that names the BLAS. CPU GEMM comes from scipy-openblas32 (symbols prefixed
// scipy_cblas_*); swapping the BLAS means changing this header and the CMake target only.
#pragma once
#include <cblas.h>

#include <cstdint>

#define JL_CBLAS(name) scipy_cblas_##name

namespace jaclab::blas {
int num_threads();
void set_num_threads(int n);
const char* name();  // e.g. "scipy-openblas32 0.3.x (Haswell)"
// Float64 vector kernels (threaded by the BLAS for long vectors), for host-side iterations over
// flat parameter vectors such as Lanczos: x . y, y += alpha x, and x *= alpha.
double dot(int64_t n, const double* x, const double* y);
void axpy(int64_t n, double alpha, const double* x, double* y);
void scal(int64_t n, double alpha, double* x);
// Eigenvalues and eigenvectors of the symmetric tridiagonal n x n matrix with diagonal d (n) and
// off-diagonal e (n - 1), by LAPACK's dstev on the calling thread (Lanczos' small T matrix: with
// NumPy's LAPACK instead, NumPy's OpenBLAS threads would wake and then spin ~0.1 s on the cores
// the pool needs). On return d holds the eigenvalues, ascending, e is overwritten, and z (n x n,
// row-major) holds the orthonormal eigenvectors as columns. std::runtime_error if LAPACK fails.
void tridiagonal_eigh(int64_t n, double* d, double* e, double* z);
// Singular values (descending) of `count` row-major m x n matrices a + i m n into s + i min(m, n),
// by LAPACK's dgesdd (values only), the matrices side by side over the pool, each call on one
// thread (as tridiagonal_eigh, NumPy's LAPACK would leave NumPy's OpenBLAS threads spinning).
// The matrices are overwritten. std::runtime_error if LAPACK fails.
void singular_values(int64_t count, int64_t m, int64_t n, double* a, double* s);
}  // namespace jaclab::blas
