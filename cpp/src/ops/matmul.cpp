// matmul: C = A @ B with NumPy semantics. The primitive handles >= 2-D operands (batch dims
// broadcast); 1-D operands are promoted by reshapes around it, as NumPy does.
//   forward  C = A B                 (BLAS GEMM, batched)
//   jvp      dC = dA B + A dB
//   vjp      dA = G B^T,  dB = A^T G (batch broadcasting undone by the central sum_to)
#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {
namespace {
using Grads = std::vector<Tensor>;

Tensor mT(const Tensor& x) { return swapaxes(x, -1, -2); }

Tensor addmm_nd(const Tensor& c, const Tensor& a, const Tensor& b);

Tensor matmul_nd(const Tensor& a, const Tensor& b);

// dA = G B^T, dB = A^T G; a shared 2-D weight folds the batch into the GEMM's K dim instead of
// summing (B, K, N) copies.
Grads matmul_vjp(const VjpContext& c, size_t ia, size_t ib) {
  const Tensor &A = c.in(ia), &B = c.in(ib);
  Tensor ga, gb;
  if (!c.differentiable && !c.batch && c.needs[ia] && c.needs[ib] && !c.only_tangent(ib) && B.ndim() == 2) {
    // First order: G B^T and A^T G (A's leading dims folded) side by side (kernels::matmul_pair).
    Array pa, pb;
    if (kernels::matmul_pair(c.g.value(), mT(B.detach()).value(), mT(fold_rows(A.detach())).value(),
                             fold_rows(c.g).value(), pa, pb))
      return {Tensor(pa), Tensor(pb)};
  }
  if (c.needs[ia]) ga = matmul_nd(c.g, mT(B));
  if (c.needs[ib] && c.only_tangent(ib)) gb = matmul_tangent_only(mT(A), c.g);
  if (c.needs[ib] && !gb.defined()) {
    if (B.ndim() == 2 && A.ndim() > 2 && !c.batch) {
      gb = matmul_nd(mT(fold_rows(A)), fold_rows(c.g));
    } else {
      gb = matmul_nd(mT(A), c.g);
    }
  }
  return {ga, gb};
}

// acc + x @ y with the symbolic zero handled (acc undefined = 0).
Tensor accumulate_product(const Tensor& acc, const Tensor& x, const Tensor& y) {
  return acc.defined() ? addmm_nd(acc, x, y) : matmul_nd(x, y);
}

// dC = dA B + A dB
Tensor product_jvp(const Tensor& acc, const JvpContext& c, size_t ia, size_t ib) {
  Array both;  // first order: the two products side by side (kernels::matmul_pair_sum)
  if (!c.batch && c.t(ia).defined() && c.t(ib).defined() && all_constant({acc, c.in(ia), c.in(ib), c.t(ia), c.t(ib)}) &&
      kernels::matmul_pair_sum(c.t(ia).value(), c.in(ib).value(), c.in(ia).value(), c.t(ib).value(),
                               acc.defined() ? &acc.value() : nullptr, both))
    return Tensor(both);
  Tensor t = acc;
  if (c.t(ia).defined()) t = accumulate_product(t, c.t(ia), c.in(ib));
  if (c.t(ib).defined()) t = accumulate_product(t, c.in(ia), c.t(ib));
  return t;
}

Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  return make_op(
      "matmul", {a, b}, kernels::matmul(a.value(), b.value()),
      [](const JvpContext& c) { return product_jvp(Tensor(), c, 0, 1); },
      [](const VjpContext& c) { return matmul_vjp(c, 0, 1); });
}

// addmm: C + A @ B in one GEMM pass (the product accumulates onto C). C must broadcast to the
// product's shape. Used by the product rules so that tangents sum inside the GEMMs.
//   jvp  dC + dA B + A dB        vjp  gC = G (summed back by sum_to), gA = G B^T, gB = A^T G
Tensor addmm_nd(const Tensor& c, const Tensor& a, const Tensor& b) {
  require_same_dtype(c, a, "addmm");
  const Shape& pa = a.shape();
  Shape prod = broadcast_shapes(Shape(pa.begin(), pa.end() - 2), Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  prod.push_back(pa[pa.size() - 2]);
  prod.push_back(b.shape().back());
  if (broadcast_shapes(c.shape(), prod, "addmm") != prod) return add(c, matmul_nd(a, b));
  return make_op(
      "addmm", {c, a, b}, kernels::matmul(a.value(), b.value(), &c.value()),
      [](const JvpContext& ctx) { return product_jvp(ctx.t(0), ctx, 1, 2); },
      [](const VjpContext& ctx) {
        Grads ab = matmul_vjp(ctx, 1, 2);
        return Grads{ctx.needs[0] ? ctx.g : Tensor(), ab[0], ab[1]};
      });
}
}  // namespace

Tensor matmul_tangent_only(const Tensor& a, const Tensor& b) {
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape()[1] != b.shape()[0]) return Tensor();
  int level = -1;  // the one jvp level among a's and b's tangents
  for (const Tensor* x : {&a, &b})
    for (auto& lt : x->tangents()) {
      if (level >= 0 && lt.first != level) return Tensor();
      level = lt.first;
    }
  if (level < 0) return Tensor();
  const Tensor ta = a.tangent(level), tb = b.tangent(level);
  const Tensor pa = a.strip_levels_from(level), pb = b.strip_levels_from(level);
  Tensor t;
  Array both;  // first order: ta pb and pa tb side by side (kernels::matmul_pair_sum)
  if (ta.defined() && tb.defined() && jvp_level_batch(level) == 0 && all_constant({ta, tb, pa, pb}) &&
      kernels::matmul_pair_sum(ta.value(), pb.value(), pa.value(), tb.value(), nullptr, both)) {
    t = Tensor(both);
  } else {
    if (ta.defined()) t = matmul(ta, pb);
    if (tb.defined()) t = t.defined() ? addmm(t, pa, tb) : matmul(pa, tb);
  }
  Array zero = Array::scalar(0.0, a.dtype(), a.device()).broadcast_view({a.shape()[0], b.shape()[1]});
  return Tensor(zero).with_tangent(level, t);
}

Tensor addmm(const Tensor& c, const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "addmm");
  if (a.ndim() < 2 || b.ndim() < 2) return add(c, matmul(a, b));
  if (a.shape().back() != b.shape()[b.ndim() - 2]) return matmul(a, b);  // raises the aligned-shapes error
  return addmm_nd(c, a, b);
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "matmul");
  if (a.ndim() == 0 || b.ndim() == 0)
    throw_value("matmul: operands must be at least 1-d, got a ", describe(a), " and a ", describe(b));
  const int64_t ka = a.shape().back(), kb = b.ndim() == 1 ? b.shape()[0] : b.shape()[b.ndim() - 2];
  if (ka != kb)
    throw_value("matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()), " are not aligned (", ka,
                " != ", kb, ")");
  if (a.ndim() >= 2 && b.ndim() >= 2) return matmul_nd(a, b);
  Tensor a2 = a.ndim() == 1 ? reshape(a, {1, a.shape()[0]}) : a;
  Tensor b2 = b.ndim() == 1 ? reshape(b, {b.shape()[0], 1}) : b;
  Tensor c = matmul_nd(a2, b2);
  Shape s(c.shape().begin(), c.shape().end() - 2);
  if (a.ndim() > 1) s.push_back(a.shape()[a.ndim() - 2]);
  if (b.ndim() > 1) s.push_back(b.shape().back());
  return reshape(c, s);
}

}  // namespace jaclab
