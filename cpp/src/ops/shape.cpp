// Reductions and shape ops: sum, mean, broadcast_to, sum_to, reshape, permute.
// All are linear, so each JVP applies the op itself to the tangent and each VJP is the adjoint.
#include <algorithm>

#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {
namespace {
using Grads = std::vector<Tensor>;

// A batch of tangents (K, *s) reshaped to (K, 1.., *s) with `rank` dims after the direction axis,
// so that right-aligned broadcasting against a rank-`rank` shape keeps K in front.
Tensor pad_directions(const Tensor& t, int rank) {
  if (t.ndim() - 1 >= rank) return t;
  Shape s{t.shape()[0]};
  for (int i = t.ndim() - 1; i < rank; ++i) s.push_back(1);
  for (int i = 1; i < t.ndim(); ++i) s.push_back(t.shape()[i]);
  return reshape(t, s);
}

std::vector<int> normalized_axes(const std::vector<int>& axes, int ndim, const char* op) {
  std::vector<int> r;
  if (axes.empty())
    for (int i = 0; i < ndim; ++i) r.push_back(i);
  for (int a : axes) r.push_back(normalize_axis(a, ndim, op));
  std::sort(r.begin(), r.end());
  if (std::adjacent_find(r.begin(), r.end()) != r.end()) throw_value(op, ": repeated axis");
  return r;
}

Shape keepdims_shape(const Shape& s, const std::vector<int>& axes) {
  Shape k = s;
  for (int a : axes) k[a] = 1;
  return k;
}
}  // namespace

Tensor sum(const Tensor& x, std::vector<int> axes_in, bool keepdims) {
  require_float(x, "sum");
  std::vector<int> axes = normalized_axes(axes_in, x.ndim(), "sum");
  return make_op(
      "sum", {x}, kernels::sum(x.value(), axes, keepdims),
      [axes, nd = x.ndim(), keepdims](const JvpContext& c) {
        if (!c.t(0).defined()) return Tensor();
        std::vector<int> neg;  // counted from the end: valid with a leading direction axis too
        for (int a : axes) neg.push_back(a - nd);
        if (neg.empty()) return c.t(0);  // 0-d input: nothing to reduce (an empty list means "all")
        return sum(c.t(0), neg, keepdims);
      },
      [axes](const VjpContext& c) {  // y = sum(x) -> dx = broadcast(g)
        const Shape& xs = c.in(0).shape();
        return Grads{broadcast_to(reshape(c.g, c.tshape(keepdims_shape(xs, axes))), c.tshape(xs))};
      });
}

Tensor mean(const Tensor& x, std::vector<int> axes_in, bool keepdims) {
  require_float(x, "mean");
  std::vector<int> axes = normalized_axes(axes_in, x.ndim(), "mean");
  int64_t n = 1;
  for (int a : axes) n *= x.shape()[a];
  // Over no elements the mean is 0 / 0 = NaN, as in NumPy (1 / 0 scales the zero sum to NaN).
  return scale(sum(x, axes, keepdims), 1.0 / static_cast<double>(n));
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  require_float(x, "broadcast_to");
  if (x.shape() == shape) return x;
  return make_op(
      "broadcast_to", {x}, x.value().broadcast_view(shape),
      [shape](const JvpContext& c) {
        if (!c.t(0).defined()) return Tensor();
        return broadcast_to(c.batch ? pad_directions(c.t(0), static_cast<int>(shape.size())) : c.t(0), c.tshape(shape));
      },
      [](const VjpContext& c) { return Grads{sum_to_batched(c.g, c.in(0).shape(), c.batch)}; });
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  require_float(x, "sum_to");
  if (x.shape() == shape) return x;
  return make_op(
      "sum_to", {x}, kernels::sum_to(x.value(), shape),
      [shape, nd = x.ndim()](const JvpContext& c) {
        if (!c.t(0).defined()) return Tensor();
        if (!c.batch) return sum_to(c.t(0), shape);
        // (K, *x.shape) -> (K, 1.., *shape) aligned to x's rank, then drop the padding.
        Shape padded{c.batch};
        for (int i = static_cast<int>(shape.size()); i < nd; ++i) padded.push_back(1);
        for (auto d : shape) padded.push_back(d);
        return reshape(sum_to(c.t(0), padded), c.tshape(shape));
      },
      [](const VjpContext& c) {
        const Shape& xs = c.in(0).shape();
        return Grads{broadcast_to(c.batch ? pad_directions(c.g, static_cast<int>(xs.size())) : c.g, c.tshape(xs))};
      });
}

Tensor fold_rows(const Tensor& x) {
  if (!x.defined() || x.ndim() == 0) throw_value("fold_rows: expected a tensor of rank >= 1");
  const Shape& s = x.shape();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < s.size(); ++i) rows *= s[i];
  return reshape(x, {rows, s.back()});
}

Tensor reshape(const Tensor& x, const Shape& shape_in) {
  if (!x.defined()) throw_value("reshape: got an undefined tensor");
  Shape shape = shape_in;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw_value("reshape: only one dimension can be -1, got ", shape_str(shape_in));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw_value("reshape: cannot reshape a tensor of shape ", shape_str(x.shape()), " into shape ",
                  shape_str(shape_in));
    shape[infer] = x.numel() / known;
  }
  if (shape == x.shape()) return x;
  Array v = x.value().reshape_view(shape);
  if (!is_float(x.dtype())) return Tensor(v);  // integer labels: no derivatives
  return make_op(
      "reshape", {x}, v,
      [shape](const JvpContext& c) { return c.t(0).defined() ? reshape(c.t(0), c.tshape(shape)) : Tensor(); },
      [](const VjpContext& c) { return Grads{reshape(c.g, c.tshape(c.in(0).shape()))}; });
}

Tensor permute(const Tensor& x, const std::vector<int>& perm_in) {
  if (!x.defined()) throw_value("transpose: got an undefined tensor");
  if (static_cast<int>(perm_in.size()) != x.ndim())
    throw_value("transpose: axes of length ", perm_in.size(), " do not match a ", describe(x));
  std::vector<int> perm(perm_in.size()), inv(perm_in.size());
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) {
    perm[i] = normalize_axis(perm_in[i], x.ndim(), "transpose");
    identity &= perm[i] == static_cast<int>(i);
  }
  Array v = x.value().permute_view(perm);  // validates repeats
  if (identity) return x;
  for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int>(i);
  if (!is_float(x.dtype())) return Tensor(v);
  return make_op(
      "permute", {x}, v,
      [perm](const JvpContext& c) { return c.t(0).defined() ? permute(c.t(0), c.tperm(perm)) : Tensor(); },
      [inv](const VjpContext& c) { return Grads{permute(c.g, c.tperm(inv))}; });
}

Tensor transpose(const Tensor& x) {
  std::vector<int> perm(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) perm[i] = x.ndim() - 1 - i;
  return permute(x, perm);
}

Tensor swapaxes(const Tensor& x, int a, int b) {
  std::vector<int> perm(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) perm[i] = i;
  std::swap(perm[normalize_axis(a, x.ndim(), "swapaxes")], perm[normalize_axis(b, x.ndim(), "swapaxes")]);
  return permute(x, perm);
}

Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  const Device from = x.device();
  return make_op(
      "to", {x}, x.value().to(device),
      [device](const JvpContext& c) { return c.t(0).defined() ? to(c.t(0), device) : Tensor(); },
      [from](const VjpContext& c) { return Grads{to(c.g, from)}; });
}

}  // namespace jaclab
