// The one place that names the BLAS. CPU GEMM comes from scipy-openblas32 (symbols prefixed
// scipy_cblas_*); swapping the BLAS means changing this header and the CMake target only.
#pragma once
#include <cblas.h>

#define JL_CBLAS(name) scipy_cblas_##name

namespace jaclab::blas {
int num_threads();
void set_num_threads(int n);
const char* name();  // e.g. "scipy-openblas32 0.3.x (Haswell)"
}  // namespace jaclab::blas
