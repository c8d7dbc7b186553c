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

Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  return make_op(
      "matmul", {a, b}, kernels::matmul(a.value(), b.value()),
      [](const JvpContext& c) {
        Tensor ta = c.t(0).defined() ? matmul_nd(c.t(0), c.in(1)) : Tensor();
        Tensor tb = c.t(1).defined() ? matmul_nd(c.in(0), c.t(1)) : Tensor();
        if (!ta.defined()) return tb;
        return tb.defined() ? add(ta, tb) : ta;
      },
      [](const VjpContext& c) {
        const Tensor &A = c.in(0), &B = c.in(1);
        Tensor ga, gb;
        if (c.needs[0]) ga = matmul_nd(c.g, mT(B));
        if (c.needs[1]) {
          if (B.ndim() == 2 && A.ndim() > 2) {
            // Shared weight: fold the batch into the GEMM's K dim instead of summing (B, K, N) copies.
            const int64_t K = A.shape().back(), N = B.shape().back();
            gb = matmul_nd(mT(reshape(A, {-1, K})), reshape(c.g, {-1, N}));
          } else {
            gb = matmul_nd(mT(A), c.g);
          }
        }
        return Grads{ga, gb};
      });
}
}  // namespace

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
