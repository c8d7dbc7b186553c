// Fused primitives for the blocks: linear, layer_norm, attention. Each has a one-pass forward
// kernel; its JVP and VJP are derived by hand and written in jaclab ops (so they differentiate
// again). Intermediates the rules need (normalised x, attention probabilities) are recomputed
// from the inputs: with constants at first order, with the graph/tangents at second order.
#include <cmath>

#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {
namespace {
using Grads = std::vector<Tensor>;

Tensor add_opt(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return add(a, b);
}
// Inputs as the rule should see them: detached (plain constants) unless the rule's result
// must itself be differentiable.
Tensor rule_input(const VjpContext& c, size_t i) { return c.differentiable ? c.in(i) : c.in(i).detach(); }
Tensor mT(const Tensor& x) { return swapaxes(x, -1, -2); }
const Array* value_or_null(const Tensor& t) { return t.defined() ? &t.value() : nullptr; }
}  // namespace

// ---- linear: y = x W + b ------------------------------------------------------------------------
//   jvp  dy = dx W + x dW + db
//   vjp  dx = g W^T,  dW = x^T g (batch folded into the GEMM),  db = sum of g over rows
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b) {
  require_same_dtype(x, W, "linear");
  require_same_dtype(x, b, "linear");
  if (W.ndim() != 2 || x.ndim() < 1 || x.shape().back() != W.shape()[0] || b.ndim() != 1 ||
      b.shape()[0] != W.shape()[1])
    throw_value("linear: expected x (..., K), W (K, N), b (N,), got x ", shape_str(x.shape()), ", W ",
                shape_str(W.shape()), ", b ", shape_str(b.shape()));
  return make_op(
      "linear", {x, W, b}, kernels::linear(x.value(), W.value(), b.value()),
      [](const JvpContext& c) {  // the bias tangent seeds the GEMM accumulator
        Array both;  // first order: dx W and x dW side by side (kernels::matmul_pair_sum)
        if (!c.batch && c.t(0).defined() && c.t(1).defined() &&
            all_constant({c.in(0), c.in(1), c.t(0), c.t(1), c.t(2)}) &&
            kernels::matmul_pair_sum(c.t(0).value(), c.in(1).value(), c.in(0).value(), c.t(1).value(),
                                     value_or_null(c.t(2)), both))
          return Tensor(both);
        Tensor t = c.t(2);
        if (c.t(0).defined()) t = t.defined() ? addmm(t, c.t(0), c.in(1)) : matmul(c.t(0), c.in(1));
        if (c.t(1).defined()) t = t.defined() ? addmm(t, c.in(0), c.t(1)) : matmul(c.in(0), c.t(1));
        return t;
      },
      [](const VjpContext& c) {
        Array gx_gW[2];  // first order: g W^T and x^T g side by side (kernels::matmul_pair)
        if (!c.differentiable && !c.batch && c.needs[0] && c.needs[1] && !c.only_tangent(1) && c.in(0).ndim() >= 2 &&
            kernels::matmul_pair(c.g.value(), mT(rule_input(c, 1)).value(),
                                 mT(fold_rows(rule_input(c, 0))).value(), fold_rows(c.g).value(),
                                 gx_gW[0], gx_gW[1]))
          return Grads{Tensor(gx_gW[0]), Tensor(gx_gW[1]), c.needs[2] ? c.g : Tensor()};
        Tensor gx = c.needs[0] ? matmul(c.g, mT(rule_input(c, 1))) : Tensor();
        Tensor gW;
        if (c.needs[1] && c.only_tangent(1) && !c.batch)
          gW = matmul_tangent_only(mT(fold_rows(rule_input(c, 0))), fold_rows(c.g));
        if (c.needs[1] && !gW.defined())  // x^T g with the rows folded; with K cotangent directions: per direction
          gW = c.batch ? matmul(mT(rule_input(c, 0)), c.g)
                       : matmul(mT(fold_rows(rule_input(c, 0))), fold_rows(c.g));
        return Grads{gx, gW, c.needs[2] ? c.g : Tensor()};  // db: summed by the central sum_to
      });
}

// ---- residual: y = x + s f, Residual(block, scale)'s combination as one node -------------------------
//   jvp  dy = dx + s df        vjp  gx = g,  gf = s g
Tensor residual(const Tensor& x, const Tensor& f, double s) {
  require_same_dtype(x, f, "residual");
  if (s == 1.0) return add(x, f);
  if (x.shape() != f.shape()) return add(x, scale(f, s));  // broadcasting: the composition
  return make_op(
      "residual", {x, f}, kernels::add_scaled(x.value(), f.value(), s),
      [s](const JvpContext& c) {
        if (!c.t(1).defined()) return c.t(0);
        if (!c.t(0).defined()) return scale(c.t(1), s);
        return residual(c.t(0), c.t(1), s);
      },
      [s](const VjpContext& c) { return Grads{c.g, c.needs[1] ? scale(c.g, s) : Tensor()}; });
}

// ---- layer_norm: y = xhat g + b, xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps) ----------------
//   jvp  dxhat = rstd (dx - mean(dx) - xhat mean(xhat dx));  dy = dxhat g + xhat dg + db
//   vjp  gxhat = gy g;  dx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat));  dg = gy xhat; db = gy
// (means over the last axis; dg, db are summed over rows by the central sum_to)
namespace {
struct LnStats {
  Tensor xhat, rstd;
};
LnStats ln_stats(const Tensor& x, double eps) {
  Tensor xc = sub(x, mean(x, {-1}, true));
  Tensor rstd = pow(add_scalar(mean(square(xc), {-1}, true), eps), -0.5);
  return {mul(xc, rstd), rstd};
}
void check_feature_param(const Tensor& x, const Tensor& p, const char* op, const char* name) {
  if (x.ndim() == 0) throw_value(op, ": x must be at least 1-d, got a ", describe(x));
  if (p.ndim() != 1 || p.shape()[0] != x.shape().back())
    throw_value(op, ": ", name, " must have shape (", x.shape().back(), ",) to match x of shape ",
                shape_str(x.shape()), ", got ", shape_str(p.shape()));
  require_same_dtype(x, p, op);
}
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, double eps) {
  require_float(x, "layer_norm");
  check_feature_param(x, g, "layer_norm", "g");
  check_feature_param(x, b, "layer_norm", "b");
  return make_op(
      "layer_norm", {x, g, b}, kernels::layer_norm(x.value(), g.value(), b.value(), eps),
      [eps](const JvpContext& c) {
        // First order (nothing downstream differentiates the tangent again): one fused pass.
        if (!c.batch && all_constant({c.in(0), c.in(1), c.t(0), c.t(1), c.t(2)})) {
          Array t;
          if (kernels::layer_norm_jvp(c.in(0).value(), c.in(1).value(), value_or_null(c.t(0)), value_or_null(c.t(1)),
                                      value_or_null(c.t(2)), eps, t))
            return Tensor(t);
        }
        LnStats s = ln_stats(c.in(0), eps);
        Tensor t;
        if (c.t(0).defined()) {
          const Tensor& tx = c.t(0);
          Tensor txhat = mul(s.rstd, sub(sub(tx, mean(tx, {-1}, true)), mul(s.xhat, mean(mul(s.xhat, tx), {-1}, true))));
          t = mul(txhat, c.in(1));
        }
        if (c.t(1).defined()) t = add_opt(t, mul(s.xhat, c.t(1)));
        return add_opt(t, c.t(2));
      },
      [eps](const VjpContext& c) {
        if (!c.differentiable && !c.batch) {  // first order: one fused pass
          Array gx, gg;
          if (kernels::layer_norm_vjp(c.in(0).value(), c.in(1).value(), c.g.value(), eps, c.needs[0] ? &gx : nullptr,
                                      c.needs[1] ? &gg : nullptr))
            return Grads{c.needs[0] ? Tensor(gx) : Tensor(), c.needs[1] ? Tensor(gg) : Tensor(),
                         c.needs[2] ? c.g : Tensor()};
        }
        LnStats s = ln_stats(rule_input(c, 0), eps);
        Tensor gx;
        if (c.needs[0]) {
          Tensor gxhat = mul(c.g, rule_input(c, 1));
          gx = mul(s.rstd, sub(sub(gxhat, mean(gxhat, {-1}, true)), mul(s.xhat, mean(mul(gxhat, s.xhat), {-1}, true))));
        }
        return Grads{gx, c.needs[1] ? mul(c.g, s.xhat) : Tensor(), c.needs[2] ? c.g : Tensor()};
      });
}

// ---- attention: O = P v, P = softmax(S), S = q k^T / sqrt(dh) + mask ----------------------------
//   jvp  dS = (dq k^T + q dk^T) / sqrt(dh);  dP = P (dS - rowsum(P dS));  dO = dP v + P dv
//   vjp  gv = P^T g;  gP = g v^T;  gS = P (gP - rowsum(gP P));  gq = gS k / sqrt(dh);  gk = gS^T q / sqrt(dh)
namespace {
Tensor attention_probs(const Tensor& q, const Tensor& k, bool causal) {
  const int n = q.ndim();
  Tensor s = scale(matmul(q, mT(k)), 1.0 / std::sqrt(static_cast<double>(q.shape()[n - 1])));
  if (causal) s = add(s, Tensor(kernels::causal_mask(q.shape()[n - 2], k.shape()[n - 2], q.dtype(), q.device())));
  return softmax(s, -1);
}
// The one jvp level carried by these inputs when they are otherwise plain (no graph, no other
// level); -1 when there is none or more than one.
int single_plain_level(std::initializer_list<Tensor> ts) {
  int level = -1;
  for (const Tensor& t : ts) {
    if (t.requires_grad() || t.tangents().size() > 1) return -1;
    if (t.tangents().empty()) continue;
    const int l = t.tangents().front().first;
    if (level >= 0 && l != level) return -1;
    level = l;
  }
  return level;
}
Tensor softmax_jvp(const Tensor& P, const Tensor& dS) { return mul(P, sub(dS, sum(mul(P, dS), {-1}, true))); }
}  // namespace

Tensor attention_composite(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  return matmul(attention_probs(q, k, causal), v);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  require_same_dtype(q, k, "attention");
  require_same_dtype(q, v, "attention");
  const int n = q.ndim();
  if (n < 2 || k.ndim() != n || v.ndim() != n)
    throw_value("attention: q, k, v must have the same rank >= 2, as (B, H, T, dh); got q ", shape_str(q.shape()),
                ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  bool same_lead = true;
  for (int i = 0; i < n - 2; ++i) same_lead &= q.shape()[i] == k.shape()[i] && q.shape()[i] == v.shape()[i];
  if (!same_lead || k.shape()[n - 1] != q.shape()[n - 1] || k.shape()[n - 2] != v.shape()[n - 2])
    throw_value("attention: incompatible q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
                shape_str(v.shape()), " (need equal leading dims, q/k sharing dh, k/v sharing the key length)");
  const double sc = 1.0 / std::sqrt(static_cast<double>(q.shape()[n - 1]));
  // Forward mode in one fused pass (CUDA): with one unbatched jvp level on plain inputs, the kernel
  // that gives the tangent also gives the value, so the value is not computed a second time.
  Array value;
  Tensor fused_tangent;
  const int level = single_plain_level({q, k, v});
  if (level >= 0 && jvp_level_batch(level) == 0) {
    Tensor tq = q.tangent(level), tk = k.tangent(level), tv = v.tangent(level);
    Array o, o_dot;
    if (all_constant({tq, tk, tv}) &&
        kernels::attention_jvp(q.value(), k.value(), v.value(), value_or_null(tq), value_or_null(tk),
                               value_or_null(tv), causal, o, o_dot)) {
      value = o;
      fused_tangent = Tensor(o_dot);
    }
  }
  if (!value.defined()) value = kernels::attention(q.value(), k.value(), v.value(), causal);
  return make_op(
      "attention", {q, k, v}, value,
      [causal, sc, fused_tangent](const JvpContext& c) {
        if (fused_tangent.defined()) return fused_tangent;  // the only level: computed with the value
        if (c.batch)  // (K, B, H, T, dh) would exceed the 4-D tensor limit
          throw UnbatchableError("attention: forward mode with a batch of tangent directions is not supported "
                                 "(the batched tangents would be 5-D); use one direction at a time");
        const Tensor &Q = c.in(0), &K = c.in(1), &V = c.in(2);
        // A fused kernel (CUDA) computes the tangent in one pass, when nothing downstream needs to
        // differentiate it again (no graph, no other levels' tangents on any operand).
        if (all_constant({Q, K, V, c.t(0), c.t(1), c.t(2)})) {
          Array o, o_dot;
          if (kernels::attention_jvp(Q.value(), K.value(), V.value(), value_or_null(c.t(0)), value_or_null(c.t(1)),
                                     value_or_null(c.t(2)), causal, o, o_dot))
            return Tensor(o_dot);
        }
        Tensor P = attention_probs(Q, K, causal);
        Tensor dS;
        if (c.t(0).defined()) dS = matmul(c.t(0), mT(K));
        if (c.t(1).defined()) dS = add_opt(dS, matmul(Q, mT(c.t(1))));
        Tensor t = dS.defined() ? matmul(softmax_jvp(P, scale(dS, sc)), V) : Tensor();
        return c.t(2).defined() ? add_opt(t, matmul(P, c.t(2))) : t;
      },
      [causal, sc](const VjpContext& c) {
        if (c.batch)  // (K, B, H, T, dh) would exceed the 4-D tensor limit
          throw UnbatchableError("attention: reverse mode with a batch of cotangent directions is not supported "
                                 "(the batched cotangents would be 5-D); use one direction at a time");
        Tensor Q = rule_input(c, 0), K = rule_input(c, 1), V = rule_input(c, 2);
        if (!c.differentiable) {  // first order: a fused kernel where the device has one (CUDA)
          Array gq, gk, gv;
          if (kernels::attention_vjp(Q.value(), K.value(), V.value(), c.out_value, c.g.value(), causal,
                                     c.needs[0] ? &gq : nullptr, c.needs[1] ? &gk : nullptr, c.needs[2] ? &gv : nullptr))
            return Grads{c.needs[0] ? Tensor(gq) : Tensor(), c.needs[1] ? Tensor(gk) : Tensor(),
                         c.needs[2] ? Tensor(gv) : Tensor()};
        }
        Tensor P = attention_probs(Q, K, causal);
        Tensor gv = c.needs[2] ? matmul(mT(P), c.g) : Tensor();
        Tensor gq, gk;
        if (c.needs[0] || c.needs[1]) {
          Tensor gS = scale(softmax_jvp(P, matmul(c.g, mT(V))), sc);  // softmax's VJP has the JVP's form
          if (c.needs[0]) gq = matmul(gS, K);
          if (c.needs[1]) gk = matmul(mT(gS), Q);
        }
        return Grads{gq, gk, gv};
      });
}

}  // namespace jaclab
