// CPU kernels on plain Arrays (no autograd). These loops are the numerical ground truth that
// any other backend is checked against. GEMM goes to the BLAS (see blas.h).
#pragma once
#include "jaclab/array.h"

namespace jaclab::kernels {

enum class Unary {
  Neg, Exp, Log, Tanh, Sigmoid, Relu, Step, Erf, Gelu, GeluTanh, Softplus, Pow, Sqrt, Square, Abs, Sign,
  GeluGrad,        // d gelu / dx = Phi(x) + x phi(x)
  OneMinusSquare,  // 1 - x^2 (tanh' in terms of tanh)
};
enum class Binary {
  Add, Sub, Mul, Div,
  MulOneMinusSquare,  // a (1 - b^2): tanh's derivative (b = tanh x) applied to a tangent or cotangent a
};

void fill(Array& a, double value);
void copy(const Array& src, Array& dst);  // same shape; dtype may differ; src may be strided

// y = op(x); `param` is the exponent for Pow.
Array unary(Unary op, const Array& x, double param = 0.0);
// NumPy broadcasting.
Array binary(Binary op, const Array& a, const Array& b);
// y = alpha * x + beta (elementwise, same dtype)
Array affine(const Array& x, double alpha, double beta);
// x + s y for x and y of one shape and dtype, in one pass (a residual block's combination): the
// same numbers as affine(y, s, 0) added to x.
Array add_scaled(const Array& x, const Array& y, double s);
// The first-order JVP of tanh_grad_mul, t (1 - y^2), in one pass: dt (1 - y^2) - 2 t y dy for four
// CPU arrays of one shape and dtype (the same numbers as that composition of binary and affine
// kernels). False (the caller composes) for anything else.
bool tanh_grad_mul_jvp(const Array& t, const Array& y, const Array& dt, const Array& dy, Array& out);

// Sum over `axes` (normalised, any order); keepdims keeps them as size-1.
Array sum(const Array& x, const std::vector<int>& axes, bool keepdims);
// Sum a broadcast result back down to `shape` (the adjoint of broadcasting).
Array sum_to(const Array& x, const Shape& shape);
Array max(const Array& x, int axis, bool keepdims);

// NumPy matmul semantics: 1-D operands promoted, batch dims broadcast. Uses BLAS GEMM.
// With `acc`: acc + a @ b, acc broadcast to the product's shape (the GEMM accumulates, beta = 1).
// With `into` (contiguous, same dtype and size, no `acc`): the product is written there.
Array matmul(const Array& a, const Array& b, const Array* acc = nullptr, Array* into = nullptr);

// Two independent products p1 = a1 @ b1, p2 = a2 @ b2, for (..., M, K) @ (K, N) operands (a 2-D
// right operand; transposed views are fine), as two GEMMs side by side, one per core: two whole
// GEMMs at once need no synchronisation inside a GEMM, and run 4-6% faster than the same GEMMs
// one after the other, each split over both cores. False (the caller then uses matmul) where that
// does not pay or apply: other than two BLAS threads, small or unequal GEMMs, a device, other shapes.
bool matmul_pair(const Array& a1, const Array& b1, const Array& a2, const Array& b2, Array& p1, Array& p2);
// acc + a1 @ b1 + a2 @ b2 (the product rule's tangent): the first product accumulates onto acc,
// the second is added in one pass. Side by side where that pays (as matmul_pair), else one after
// the other, in the same order, so the result does not depend on the thread count. acc may be
// nullptr, else it broadcasts to the products' common shape. False (use addmm) only for shapes
// or devices this does not cover.
bool matmul_pair_sum(const Array& a1, const Array& b1, const Array& a2, const Array& b2, const Array* acc,
                     Array& out);

Array softmax(const Array& x, int axis);
Array log_softmax(const Array& x, int axis);

// labels: int64 of any shape; result labels.shape + (num_classes,), in `dtype`.
Array one_hot(const Array& labels, int64_t num_classes, DType dtype);
// Causal mask (T, S): 0 where s <= t + (S - T), -inf above; in `dtype`, on `device`.
Array causal_mask(int64_t T, int64_t S, DType dtype, Device device = {});

bool all_finite(const Array& x);

// ---- fused block kernels (kernels_nn.cpp) ---------------------------------------------------
// y = x @ W + b for x (..., K), W (K, N), b (N,): the bias is the GEMM's C input (beta = 1).
Array linear(const Array& x, const Array& W, const Array& b);
// softmax(q k^T / sqrt(dh) [+ causal mask]) v per leading index; q (..., T, dh), k (..., S, dh),
// v (..., S, dv) with equal leading dims. The (T, S) scores live only per slice.
Array attention(const Array& q, const Array& k, const Array& v, bool causal);
// Fused attention derivatives, where a device backend has them (CUDA); false otherwise, and the
// caller falls back on the composite rules. jvp: o and its tangent o_dot from tangents dq/dk/dv
// (nullptr = zero) in one pass. vjp: the cotangents of q, k, v (nullptr = not wanted) from o and g.
bool attention_jvp(const Array& q, const Array& k, const Array& v, const Array* dq, const Array* dk, const Array* dv,
                   bool causal, Array& o, Array& o_dot);
bool attention_vjp(const Array& q, const Array& k, const Array& v, const Array& o, const Array& g, bool causal,
                   Array* gq, Array* gk, Array* gv);
// (x - mean) / sqrt(var + eps) * g + b over the last axis (biased variance).
Array layer_norm(const Array& x, const Array& g, const Array& b, double eps);
// Fused first-order layer_norm rules (CPU; false on a device without them, or for tangents or
// cotangents not of the full shape: the caller then uses the composite rules). With
// xhat = (x - mean) rstd per row and means over the last axis:
//   jvp  y_dot = rstd (dx - mean(dx) - xhat mean(xhat dx)) g + xhat dg + db   (nullptr = zero)
//   vjp  gx = rstd (gxh - mean(gxh) - xhat mean(gxh xhat)), gxh = gy g;  gg_rows = gy xhat
//        (per row, the caller sums it over rows; nullptr = not wanted)
bool layer_norm_jvp(const Array& x, const Array& g, const Array* dx, const Array* dg, const Array* db, double eps,
                    Array& y_dot);
bool layer_norm_vjp(const Array& x, const Array& g, const Array& gy, double eps, Array* gx, Array* gg_rows);

}  // namespace jaclab::kernels
