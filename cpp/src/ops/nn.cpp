// Composite ops, written with primitives (so every derivative order comes for free).
// Fused versions with hand-written rules can replace them where profiling says so.
#include <cmath>

#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {

// The same maths as the fused layer_norm primitive, written with primitives (a reference path).
Tensor layer_norm_composite(const Tensor& x, const Tensor& g, const Tensor& b, double eps) {
  Tensor xc = sub(x, mean(x, {-1}, true));
  Tensor inv_std = pow(add_scalar(mean(square(xc), {-1}, true), eps), -0.5);
  return add(mul(mul(xc, inv_std), g), b);
}

// y = x / sqrt(mean(x^2) + eps) * g, over the last axis.
Tensor rms_norm(const Tensor& x, const Tensor& g, double eps) {
  require_float(x, "rms_norm");
  if (x.ndim() == 0 || g.ndim() != 1 || g.shape()[0] != x.shape().back())
    throw_value("rms_norm: g must have shape (", x.ndim() ? x.shape().back() : 0, ",) to match x of shape ",
                shape_str(x.shape()), ", got ", shape_str(g.shape()));
  require_same_dtype(x, g, "rms_norm");
  Tensor inv_rms = pow(add_scalar(mean(square(x), {-1}, true), eps), -0.5);
  return mul(mul(x, inv_rms), g);
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
    target = Tensor(kernels::one_hot(labels.value().to(logits.device()), C, logits.dtype()));  // indices follow the logits
  } else {
    if (labels.shape() != logits.shape())
      throw_value("cross_entropy: probability targets must have the logits' shape ", shape_str(logits.shape()),
                  ", got ", shape_str(labels.shape()));
    require_same_dtype(logits, labels, "cross_entropy");
    target = labels;
  }
  // The mean over the batch; over an empty batch 0 / 0 = NaN, as mean() gives.
  return scale(sum(mul(target, log_softmax(logits, -1))), -1.0 / static_cast<double>(B));
}

Tensor mse(const Tensor& pred, const Tensor& target) {
  require_same_dtype(pred, target, "mse");
  if (pred.shape() != target.shape())
    throw_value("mse: pred has shape ", shape_str(pred.shape()), " but target has shape ", shape_str(target.shape()));
  return mean(square(sub(pred, target)));
}

}  // namespace jaclab
