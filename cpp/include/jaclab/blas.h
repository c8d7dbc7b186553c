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
}  // namespace jaclab::blas
