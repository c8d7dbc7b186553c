// Differentiable ops. Each primitive's forward, JVP and VJP live together in one file under
// cpp/src/ops/; composites (layer_norm, attention, losses) are written with primitives.
// Conventions: NumPy broadcasting; axes may be negative; float32/float64 (int64 only for labels).
#pragma once
#include <optional>
#include <vector>

#include "jaclab/tensor.h"

namespace jaclab {

// ---- creation -------------------------------------------------------------------------------
Tensor scalar_like(const Tensor& like, double value);  // 0-d, same dtype
Tensor zeros_like(const Tensor& like);
Tensor full(const Shape& shape, DType dtype, double value);

// ---- elementwise (ops/elementwise.cpp) ------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);
Tensor scale(const Tensor& x, double alpha);  // alpha * x
Tensor add_scalar(const Tensor& x, double beta);  // x + beta
Tensor pow(const Tensor& x, double exponent);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor gelu(const Tensor& x);       // x * Phi(x), exact erf form
Tensor gelu_tanh(const Tensor& x);  // tanh approximation
Tensor softplus(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);

// ---- reductions and shapes (ops/reduce.cpp, ops/shape.cpp) ---------------------------------
// axes empty = all axes.
Tensor sum(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor broadcast_to(const Tensor& x, const Shape& shape);
// A copy on `device` (x itself when already there); differentiable: tangents follow the value,
// cotangents go back to x's device.
Tensor to(const Tensor& x, Device device);
Tensor sum_to(const Tensor& x, const Shape& shape);  // adjoint of broadcast_to
Tensor reshape(const Tensor& x, const Shape& shape);  // one dim may be -1
// x (..., n) as (rows, n), its leading dims folded into rows; also for n = 0, where -1 cannot infer rows.
Tensor fold_rows(const Tensor& x);
Tensor permute(const Tensor& x, const std::vector<int>& perm);
Tensor transpose(const Tensor& x);  // reverse all axes (NumPy .T)
Tensor swapaxes(const Tensor& x, int a, int b);

// ---- linear algebra (ops/matmul.cpp) ------------------------------------------------------------
Tensor matmul(const Tensor& a, const Tensor& b);  // NumPy semantics, batched, broadcasting
Tensor addmm(const Tensor& c, const Tensor& a, const Tensor& b);  // c + a @ b, one GEMM pass
// For a rule's result of which only the tangent is read (VjpContext::only_tangent): 2-D a @ b
// as a zero placeholder carrying the tangent da b + a db at the one jvp level a and b carry, so
// the value's GEMM is skipped. Undefined when that does not apply (then compute a @ b).
Tensor matmul_tangent_only(const Tensor& a, const Tensor& b);

// ---- softmax family (ops/softmax.cpp) -------------------------------------------------------
Tensor softmax(const Tensor& x, int axis = -1);
Tensor log_softmax(const Tensor& x, int axis = -1);

// ---- fused block primitives (ops/blocks.cpp) -----------------------------------------------------
// y = x @ W + b; x (..., K), W (K, N), b (N,).
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b);
// x + s f: the combination of Residual(block, scale), one node (x and f of one shape; others
// broadcast through add and scale).
Tensor residual(const Tensor& x, const Tensor& f, double s);
// layer_norm over the last axis, biased variance; g, b of shape (d,).
Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, double eps = 1e-5);
// q (..., T, dh), k (..., S, dh), v (..., S, dv), equal leading dims (B, H):
// softmax(q k^T / sqrt(dh)) v; the causal mask lets query t see keys s <= t + (S - T).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = false);

// ---- composites (ops/nn.cpp) ------------------------------------------------------------------
Tensor rms_norm(const Tensor& x, const Tensor& g, double eps = 1e-6);
// The fused primitives' maths written with primitives: an independent path for tests.
Tensor layer_norm_composite(const Tensor& x, const Tensor& g, const Tensor& b, double eps = 1e-5);
Tensor attention_composite(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = false);
// logits (B, C), labels int64 (B,) or probabilities (B, C); mean over the batch.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
Tensor mse(const Tensor& pred, const Tensor& target);  // mean of squared differences

// ---- checks shared by ops -------------------------------------------------------------------
void require_float(const Tensor& x, const char* op);
void require_same_dtype(const Tensor& a, const Tensor& b, const char* op);

}  // namespace jaclab
