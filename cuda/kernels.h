// CUDA kernels on raw device pointers: the launchers the CUDA backend (backend.cpp) calls.
// Shapes are handled on the host; here every array is either contiguous or described by a
// `Strided` (kernels::pad4 of jaclab/backend.h: 4 dims, outermost first, broadcast stride 0).
// All launches go to the legacy default stream and are checked (std::runtime_error on failure).
#pragma once
#include <cstdint>

#include "jaclab/backend.h"

namespace jaclab::cuda {

using Strided = kernels::Strided4;

// Throws std::runtime_error naming `what` and the CUDA error when `err` is not cudaSuccess.
void check(int err, const char* what);

void fill(DType dt, void* y, int64_t n, double value);
// y[index] = x[index] over the 4-d index space ys.n, converting dtypes.
void copy(DType xt, const void* x, const Strided& xs, DType yt, void* y, const Strided& ys);
void unary(kernels::Unary op, DType dt, const void* x, void* y, int64_t n, double param);
// y (contiguous, shape out.n) = a op b, a/b read through their (broadcast) strides.
void binary(kernels::Binary op, DType dt, const void* a, const Strided& as, const void* b, const Strided& bs, void* y,
            const Strided& out);
// y = a op s (or s op a when scalar_first), a contiguous.
void binary_scalar(kernels::Binary op, DType dt, const void* a, double s, bool scalar_first, void* y, int64_t n);
void affine(DType dt, const void* x, void* y, int64_t n, double alpha, double beta);

enum class Reduce { Sum, Max };
void reduce_rows(Reduce r, DType dt, const void* x, void* y, int64_t rows, int64_t n);  // y[r] = op_j x[r, j]
void softmax_rows(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log);
void layer_norm_rows(DType dt, const void* x, const void* g, const void* b, void* y, int64_t rows, int64_t d,
                     double eps);
void one_hot(DType dt, const int64_t* labels, void* y, int64_t n, int64_t num_classes);  // y zeroed by the caller
void causal_mask(DType dt, void* y, int64_t T, int64_t S);
bool all_finite(DType dt, const void* x, int64_t n);

}  // namespace jaclab::cuda
