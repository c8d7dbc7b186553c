// cuBLAS, loaded at run time. jaclab is built without cuBLAS headers or libraries: the few entry
// points we call are declared here (their C ABI is stable across cuBLAS 12 and 13) and looked up
// with dlopen/dlsym on first use. Where cuBLAS comes from (see docs/engine.md): an already loaded
// libcublas (the Python package preloads the `nvidia-cublas` wheel when installed, pip extra
// `jaclab[cuda]`), else libcublas.so.13 / .so.12 on the loader path, else $CUDA_HOME/lib64.
#pragma once
#include <cstdint>

#include "jaclab/array.h"
#include "jaclab/cuda.h"  // set_allow_tf32, allow_tf32, cublas_library

namespace jaclab::cuda {

bool tf32_enabled();  // set_allow_tf32's state, without loading cuBLAS

// Row-major, batched: C[i] = A[i] op B[i] (+ C[i] when accumulate) for i < batch, with
// A[i] = a + i * stride_a (M x K after `trans_a`), B[i] likewise (K x N), C[i] = c + i * M * N
// (contiguous M x N). lda/ldb are the row-major leading dimensions. float32 uses plain FP32
// arithmetic unless TF32 was allowed (set_allow_tf32).
void gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* a, int64_t lda,
          int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, void* c, int64_t batch, bool accumulate);

}  // namespace jaclab::cuda
