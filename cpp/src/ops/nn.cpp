// Composite ops, written with primitives (so every derivative order comes for free).
// Fused versions with hand-written rules can replace them where profiling says so.
#include <cmath>

#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {

static void check_feature_param(const Tensor& x, const Tensor& p, const char* op, const char* name) {
  if (x.ndim() == 0) throw_value(op, ": x must be at least 1-d, got a ", describe(x));
  if (p.ndim() != 1 || p.shape()[0] != x.shape().back())
    throw_value(op, ": ", name, " must have shape (", x.shape().back(), ",) to match x of shape ",
                shape_str(x.shape()), ", got ", shape_str(p.shape()));
  require_same_dtype(x, p, op);
}

// y = (x - mean) / sqrt(var + eps) * g + b, statistics over the last axis, biased variance.
Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, double eps) {
  require_float(x, "layer_norm");
  check_feature_param(x, g, "layer_norm", "g");
  check_feature_param(x, b, "layer_norm", "b");
  Tensor xc = sub(x, mean(x, {-1}, true));
  Tensor inv_std = pow(add_scalar(mean(square(xc), {-1}, true), eps), -0.5);
  return add(mul(mul(xc, inv_std), g), b);
}

// y = x / sqrt(mean(x^2) + eps) * g, over the last axis.
Tensor rms_norm(const Tensor& x, const Tensor& g, double eps) {
  require_float(x, "rms_norm");
  check_feature_param(x, g, "rms_norm", "g");
  Tensor inv_rms = pow(add_scalar(mean(square(x), {-1}, true), eps), -0.5);
  return mul(mul(x, inv_rms), g);
}

// softmax(q k^T / sqrt(dh) + mask) v over (..., T, dh) operands.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  require_same_dtype(q, k, "attention");
  require_same_dtype(q, v, "attention");
  if (q.ndim() < 2 || k.ndim() != q.ndim() || v.ndim() != q.ndim())
    throw_value("attention: q, k, v must have the same rank >= 2 (B, H, T, dh), got ", shape_str(q.shape()), ", ",
                shape_str(k.shape()), ", ", shape_str(v.shape()));
  const int n = q.ndim();
  if (k.shape()[n - 1] != q.shape()[n - 1] || k.shape()[n - 2] != v.shape()[n - 2])
    throw_value("attention: incompatible q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
                shape_str(v.shape()), " (need q/k to share dh and k/v to share the key length)");
  const double dh = static_cast<double>(q.shape()[n - 1]);
  Tensor s = scale(matmul(q, swapaxes(k, -1, -2)), 1.0 / std::sqrt(dh));
  if (causal) s = add(s, Tensor(kernels::causal_mask(q.shape()[n - 2], k.shape()[n - 2], q.dtype())));
  return matmul(softmax(s, -1), v);
}

// Mean over the batch of -sum_c y_c log softmax(logits)_c; labels are int64 class ids (B,)
// or a float (B, C) matrix of target probabilities.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  require_float(logits, "cross_entropy");
  if (logits.ndim() != 2) throw_value("cross_entropy: logits must be (B, C), got ", shape_str(logits.shape()));
  const int64_t B = logits.shape()[0], C = logits.shape()[1];
  Tensor target;
  if (labels.dtype() == DType::Int64) {
    if (labels.ndim() != 1 || labels.shape()[0] != B)
      throw_value("cross_entropy: labels must have shape (", B, ",) for logits of shape ", shape_str(logits.shape()),
                  ", got ", shape_str(labels.shape()));
    target = Tensor(kernels::one_hot(labels.value(), C, logits.dtype()));
  } else {
    if (labels.shape() != logits.shape())
      throw_value("cross_entropy: probability targets must have the logits' shape ", shape_str(logits.shape()),
                  ", got ", shape_str(labels.shape()));
    require_same_dtype(logits, labels, "cross_entropy");
    target = labels;
  }
  return scale(sum(mul(target, log_softmax(logits, -1))), -1.0 / static_cast<double>(std::max<int64_t>(B, 1)));
}

Tensor mse(const Tensor& pred, const Tensor& target) {
  require_same_dtype(pred, target, "mse");
  if (pred.shape() != target.shape())
    throw_value("mse: pred has shape ", shape_str(pred.shape()), " but target has shape ", shape_str(target.shape()));
  return mean(square(sub(pred, target)));
}

}  // namespace jaclab
