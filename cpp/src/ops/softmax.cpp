// softmax and log_softmax along one axis (fused, numerically stable kernels).
//   y = softmax(x):      jvp  dy = y (t - <y, t>)        vjp  dx = y (g - <g, y>)
//   y = log_softmax(x):  jvp  dy = t - <p, t>            vjp  dx = g - p sum(g),   p = exp(y)
// where <.,.> and sum reduce over the softmax axis (keepdims).
#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {
namespace {
using Grads = std::vector<Tensor>;
}

Tensor softmax(const Tensor& x, int axis) {
  require_float(x, "softmax");
  const int ax = normalize_axis(axis, x.ndim(), "softmax");
  return make_op(
      "softmax", {x}, kernels::softmax(x.value(), ax),
      [neg = ax - x.ndim()](const JvpContext& c) {  // axis from the end: works with a direction axis
        if (!c.t(0).defined()) return Tensor();
        const Tensor& y = c.out;
        return mul(y, sub(c.t(0), sum(mul(y, c.t(0)), {neg}, true)));
      },
      [ax, neg = ax - x.ndim()](const VjpContext& c) {
        Tensor y = c.out([&] { return softmax(c.in(0), ax); });
        return Grads{mul(y, sub(c.g, sum(mul(c.g, y), {neg}, true)))};
      });
}

Tensor log_softmax(const Tensor& x, int axis) {
  require_float(x, "log_softmax");
  const int ax = normalize_axis(axis, x.ndim(), "log_softmax");
  return make_op(
      "log_softmax", {x}, kernels::log_softmax(x.value(), ax),
      [neg = ax - x.ndim()](const JvpContext& c) {
        if (!c.t(0).defined()) return Tensor();
        Tensor p = exp(c.out);
        return sub(c.t(0), sum(mul(p, c.t(0)), {neg}, true));
      },
      [ax, neg = ax - x.ndim()](const VjpContext& c) {
        Tensor p = c.differentiable ? softmax(c.in(0), ax) : Tensor(kernels::unary(kernels::Unary::Exp, c.out_value));
        return Grads{sub(c.g, mul(p, sum(c.g, {neg}, true)))};
      });
}

}  // namespace jaclab
