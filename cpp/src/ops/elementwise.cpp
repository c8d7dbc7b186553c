// Elementwise primitives. Each op: forward kernel, then its JVP rule, then its VJP rule.
// Rules are written in jaclab ops so they can be differentiated again. Notation: x input,
// y output, t tangent of x, g cotangent of y.
#include <cmath>

#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {
namespace {

using kernels::Binary;
using kernels::Unary;
using Grads = std::vector<Tensor>;

constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;

Tensor unary_value(Unary op, const Tensor& x, const char* name, double p = 0) {
  require_float(x, name);
  return Tensor(kernels::unary(op, x.value(), p));
}

// A symbolic-zero-aware sum of two tangents.
Tensor add_opt(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return add(a, b);
}

}  // namespace

void require_float(const Tensor& x, const char* op) {
  if (!x.defined()) throw_value(op, ": got an undefined tensor");
  if (!is_float(x.dtype())) throw_type(op, ": expected a float32 or float64 tensor, got an ", describe(x));
}
void require_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  require_float(a, op);
  require_float(b, op);
  if (a.dtype() != b.dtype()) throw_type(op, ": dtype mismatch between a ", describe(a), " and a ", describe(b));
  // Devices are checked where the kernel is chosen (jaclab::backend_for), which lets 0-d CPU scalars join.
}

// A 0-d CPU scalar: it joins ops on any device (backends take 0-d CPU operands).
Tensor scalar_like(const Tensor& like, double value) { return Tensor(Array::scalar(value, like.dtype())); }
Tensor zeros_like(const Tensor& like) { return Tensor(Array::zeros(like.shape(), like.dtype(), like.device())); }
Tensor full(const Shape& shape, DType dtype, double value) { return Tensor(Array::full(shape, dtype, value)); }

// ---- binary ---------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "add");
  return make_op(
      "add", {a, b}, kernels::binary(Binary::Add, a.value(), b.value()),
      [](const JvpContext& c) { return add_opt(c.t(0), c.t(1)); },
      [](const VjpContext& c) { return Grads{c.g, c.g}; });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "subtract");
  return make_op(
      "sub", {a, b}, kernels::binary(Binary::Sub, a.value(), b.value()),
      [](const JvpContext& c) {
        if (!c.t(1).defined()) return c.t(0);
        return c.t(0).defined() ? sub(c.t(0), c.t(1)) : neg(c.t(1));
      },
      [](const VjpContext& c) { return Grads{c.g, c.needs[1] ? neg(c.g) : Tensor()}; });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "multiply");
  return make_op(
      "mul", {a, b}, kernels::binary(Binary::Mul, a.value(), b.value()),
      [](const JvpContext& c) {  // d(ab) = da b + a db
        return add_opt(c.t(0).defined() ? mul(c.t(0), c.in(1)) : Tensor(),
                       c.t(1).defined() ? mul(c.in(0), c.t(1)) : Tensor());
      },
      [](const VjpContext& c) {
        return Grads{c.needs[0] ? mul(c.g, c.in(1)) : Tensor(), c.needs[1] ? mul(c.in(0), c.g) : Tensor()};
      });
}

Tensor div(const Tensor& a, const Tensor& b) {
  require_same_dtype(a, b, "divide");
  return make_op(
      "div", {a, b}, kernels::binary(Binary::Div, a.value(), b.value()),
      [](const JvpContext& c) {  // d(a/b) = da/b - (a/b) db/b
        Tensor ta = c.t(0).defined() ? div(c.t(0), c.in(1)) : Tensor();
        Tensor tb = c.t(1).defined() ? neg(div(mul(c.out, c.t(1)), c.in(1))) : Tensor();
        return add_opt(ta, tb);
      },
      [](const VjpContext& c) {
        Tensor ga = div(c.g, c.in(1));
        return Grads{ga, c.needs[1] ? neg(div(mul(ga, c.in(0)), c.in(1))) : Tensor()};
      });
}

// ---- unary, linear --------------------------------------------------------------------------
Tensor neg(const Tensor& x) {
  return make_op(
      "neg", {x}, unary_value(Unary::Neg, x, "negative").value(),
      [](const JvpContext& c) { return c.t(0).defined() ? neg(c.t(0)) : Tensor(); },
      [](const VjpContext& c) { return Grads{neg(c.g)}; });
}

Tensor scale(const Tensor& x, double alpha) {
  require_float(x, "scale");
  return make_op(
      "scale", {x}, kernels::affine(x.value(), alpha, 0.0),
      [alpha](const JvpContext& c) { return c.t(0).defined() ? scale(c.t(0), alpha) : Tensor(); },
      [alpha](const VjpContext& c) { return Grads{scale(c.g, alpha)}; });
}

Tensor add_scalar(const Tensor& x, double beta) {
  require_float(x, "add");
  return make_op(
      "add_scalar", {x}, kernels::affine(x.value(), 1.0, beta), [](const JvpContext& c) { return c.t(0); },
      [](const VjpContext& c) { return Grads{c.g}; });
}

// ---- unary, nonlinear -----------------------------------------------------------------------
// Each: y = f(x); the rule gives f'(x) (possibly via y), then jvp = t f', vjp = g f'.
#define JL_UNARY_RULES(fname, DERIV)                                                     \
  [](const JvpContext& c) {                                                              \
    if (!c.t(0).defined()) return Tensor();                                              \
    const Tensor& x = c.in(0);                                                           \
    const Tensor& y = c.out;                                                             \
    (void)x, (void)y;                                                                    \
    return mul(c.t(0), DERIV);                                                           \
  },                                                                                     \
      [](const VjpContext& c) {                                                          \
        const Tensor& x = c.in(0);                                                       \
        Tensor y = c.out([&] { return fname(x); });                                      \
        (void)y;                                                                         \
        return Grads{mul(c.g, DERIV)};                                                   \
      }

Tensor exp(const Tensor& x) {  // exp' = y
  return make_op("exp", {x}, unary_value(Unary::Exp, x, "exp").value(), JL_UNARY_RULES(exp, y));
}

Tensor log(const Tensor& x) {  // log' = 1/x
  return make_op("log", {x}, unary_value(Unary::Log, x, "log").value(),
                 JL_UNARY_RULES(log, pow(x, -1.0)));
}

// t (1 - y^2): tanh's derivative (y = tanh x) applied to a tangent or a cotangent t, in one pass
// (a primitive so that a first-order tanh rule is one kernel). Its own rules are compositions:
//   jvp  dt (1 - y^2) - 2 t y dy          vjp  gt = g (1 - y^2),  gy = -2 g t y
static Tensor tanh_grad_mul(const Tensor& t, const Tensor& y) {
  return make_op(
      "tanh_grad_mul", {t, y}, kernels::binary(Binary::MulOneMinusSquare, t.value(), y.value()),
      [](const JvpContext& c) {
        Array both;  // first order (an HVP's backward pass): the two terms below in one pass
        if (!c.batch && c.t(0).defined() && c.t(1).defined() && all_constant({c.in(0), c.in(1), c.t(0), c.t(1)}) &&
            kernels::tanh_grad_mul_jvp(c.in(0).value(), c.in(1).value(), c.t(0).value(), c.t(1).value(), both))
          return Tensor(both);
        Tensor dt = c.t(0).defined() ? tanh_grad_mul(c.t(0), c.in(1)) : Tensor();
        Tensor dy = c.t(1).defined() ? scale(mul(mul(c.in(0), c.in(1)), c.t(1)), -2.0) : Tensor();
        return add_opt(dt, dy);
      },
      [](const VjpContext& c) {
        return Grads{c.needs[0] ? tanh_grad_mul(c.g, c.in(1)) : Tensor(),
                     c.needs[1] ? scale(mul(mul(c.g, c.in(0)), c.in(1)), -2.0) : Tensor()};
      });
}

Tensor tanh(const Tensor& x) {  // tanh' = 1 - y^2: jvp t (1 - y^2), vjp g (1 - y^2)
  return make_op(
      "tanh", {x}, unary_value(Unary::Tanh, x, "tanh").value(),
      [](const JvpContext& c) { return c.t(0).defined() ? tanh_grad_mul(c.t(0), c.out) : Tensor(); },
      [](const VjpContext& c) {
        const Tensor& x = c.in(0);
        return Grads{tanh_grad_mul(c.g, c.out([&] { return tanh(x); }))};
      });
}

Tensor sigmoid(const Tensor& x) {  // sigmoid' = y (1 - y)
  return make_op("sigmoid", {x}, unary_value(Unary::Sigmoid, x, "sigmoid").value(),
                 JL_UNARY_RULES(sigmoid, mul(y, add_scalar(neg(y), 1.0))));
}

// relu' = step(x): a constant mask (its own derivative is zero almost everywhere; relu'(0) := 0).
static Tensor step(const Tensor& x) { return Tensor(kernels::unary(Unary::Step, x.value())); }
Tensor relu(const Tensor& x) {
  return make_op("relu", {x}, unary_value(Unary::Relu, x, "relu").value(), JL_UNARY_RULES(relu, step(x)));
}

Tensor erf(const Tensor& x) {  // erf' = 2/sqrt(pi) exp(-x^2)
  return make_op("erf", {x}, unary_value(Unary::Erf, x, "erf").value(),
                 JL_UNARY_RULES(erf, scale(exp(neg(square(x))), kTwoOverSqrtPi)));
}

// gelu'(x) = Phi(x) + x phi(x); gelu''(x) = phi(x) (2 - x^2), phi the standard normal density.
static Tensor gelu_grad(const Tensor& x) {
  return make_op("gelu_grad", {x}, kernels::unary(Unary::GeluGrad, x.value()),
                 JL_UNARY_RULES(gelu_grad, mul(scale(exp(scale(square(x), -0.5)), kInvSqrt2Pi),
                                               add_scalar(neg(square(x)), 2.0))));
}

Tensor gelu(const Tensor& x) {
  return make_op("gelu", {x}, unary_value(Unary::Gelu, x, "gelu").value(), JL_UNARY_RULES(gelu, gelu_grad(x)));
}

// gelu_tanh(x) = x/2 (1 + tanh(u)), u = c (x + a x^3):
//   d/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 a x^2), written in ops (differentiable).
static Tensor gelu_tanh_grad(const Tensor& x) {
  constexpr double c = 0.79788456080286535588, a = 0.044715;
  Tensor th = tanh(scale(add(x, scale(mul(x, square(x)), a)), c));
  Tensor du = scale(add_scalar(scale(square(x), 3 * a), 1.0), c);
  return add(scale(add_scalar(th, 1.0), 0.5), mul(scale(x, 0.5), tanh_grad_mul(du, th)));
}
Tensor gelu_tanh(const Tensor& x) {
  return make_op("gelu_tanh", {x}, unary_value(Unary::GeluTanh, x, "gelu_tanh").value(),
                 JL_UNARY_RULES(gelu_tanh, gelu_tanh_grad(x)));
}

Tensor softplus(const Tensor& x) {  // softplus' = sigmoid(x)
  return make_op("softplus", {x}, unary_value(Unary::Softplus, x, "softplus").value(),
                 JL_UNARY_RULES(softplus, sigmoid(x)));
}

Tensor square(const Tensor& x) {  // (x^2)' = 2x
  return make_op("square", {x}, unary_value(Unary::Square, x, "square").value(),
                 JL_UNARY_RULES(square, scale(x, 2.0)));
}

Tensor sqrt(const Tensor& x) {  // sqrt' = 1 / (2 y)
  return make_op("sqrt", {x}, unary_value(Unary::Sqrt, x, "sqrt").value(),
                 JL_UNARY_RULES(sqrt, scale(pow(y, -1.0), 0.5)));
}

Tensor pow(const Tensor& x, double p) {  // (x^p)' = p x^(p-1)
  require_float(x, "power");
  if (p == 1.0) return x;
  if (p == 2.0) return square(x);
  if (p == 0.0) return Tensor(Array::full(x.shape(), x.dtype(), 1.0, x.device()));
  return make_op(
      "pow", {x}, kernels::unary(Unary::Pow, x.value(), p),
      [p](const JvpContext& c) { return c.t(0).defined() ? mul(c.t(0), scale(pow(c.in(0), p - 1), p)) : Tensor(); },
      [p](const VjpContext& c) { return Grads{mul(c.g, scale(pow(c.in(0), p - 1), p))}; });
}

#undef JL_UNARY_RULES

}  // namespace jaclab
