// Derivatives through jaclab/transforms.h checked against finite differences and against each other.
#include <gtest/gtest.h>

#include <cmath>

#include "jaclab/ops.h"
#include "jaclab/transforms.h"
#include "test_util.h"

using namespace jltest;
namespace jl = jaclab;

namespace {

// f(x, W) = tanh(x @ W)
TensorList tanh_linear(const TensorList& p) { return {jl::tanh(jl::matmul(p[0], p[1]))}; }

// A scalar loss of a two-layer tanh MLP: p = {x, W1, b1, W2}; 0.5 * mean(tanh(tanh(x W1 + b1) W2)^2).
TensorList mlp_loss(const TensorList& p) {
  Tensor h = jl::tanh(jl::add(jl::matmul(p[0], p[1]), p[2]));
  Tensor y = jl::tanh(jl::matmul(h, p[3]));
  return {jl::scale(jl::mean(jl::square(y)), 0.5)};
}

TensorList mlp_params(unsigned seed) {
  return {random_tensor({4, 3}, seed), random_tensor({3, 5}, seed + 1), random_tensor({5}, seed + 2),
          random_tensor({5, 2}, seed + 3)};
}
TensorList like(const TensorList& p, unsigned seed) {
  TensorList r;
  for (size_t i = 0; i < p.size(); ++i) r.push_back(random_tensor(p[i].shape(), seed + 17 * i, p[i].dtype()));
  return r;
}

}  // namespace

TEST(Jvp, TanhOfMatmulMatchesCentralDifferences) {
  TensorList p = {random_tensor({4, 3}, 100), random_tensor({3, 5}, 101)};
  TensorList t = like(p, 102);
  jl::JvpResult r = jl::jvp(tanh_linear, p, t);
  ASSERT_EQ(r.out.size(), 1u);
  ASSERT_EQ(r.tangents.size(), 1u);
  EXPECT_EQ(r.tangents[0].shape(), (Shape{4, 5}));
  EXPECT_FALSE(r.out[0].has_tangents());  // the primal output is returned without this level's tangent
  expect_near_vec(to_vec(r.out[0]), to_vec(tanh_linear(p)[0]), 0, 0, "primal out");
  auto fd = central_diff(tanh_linear, p, t, 1e-6);
  expect_near_vec(to_vec(r.tangents[0]), fd[0], 1e-7, 1e-8, "jvp vs central differences");
  // Exact formula: (1 - tanh^2) * (tx W + x tW).
  auto y = to_vec(r.out[0]);
  auto lin = to_vec(jl::add(jl::matmul(t[0], p[1]), jl::matmul(p[0], t[1])));
  for (size_t i = 0; i < y.size(); ++i) lin[i] *= 1 - y[i] * y[i];
  expect_near_vec(to_vec(r.tangents[0]), lin, 1e-13, 1e-14, "jvp vs closed form");
}

TEST(Jvp, ZeroTangentForUnusedInputAndLinearity) {
  TensorList p = {random_tensor({2, 3}, 110), random_tensor({3, 3}, 111)};
  TensorList t = like(p, 112);
  jl::Fn only_first = [](const TensorList& q) { return TensorList{jl::tanh(q[0])}; };
  // Tangent of an output that doesn't depend on the second input: unaffected by t[1].
  TensorList t2 = {t[0], jl::zeros_like(p[1])};
  expect_near_vec(to_vec(jl::jvp(only_first, p, t).tangents[0]), to_vec(jl::jvp(only_first, p, t2).tangents[0]), 0, 0);
  // Linearity in the tangent: J(2t) = 2 J t.
  TensorList t3 = {jl::scale(t[0], 2.0), jl::scale(t[1], 2.0)};
  auto a = to_vec(jl::jvp(tanh_linear, p, t).tangents[0]), b = to_vec(jl::jvp(tanh_linear, p, t3).tangents[0]);
  for (auto& v : a) v *= 2;
  expect_near_vec(b, a, 1e-14, 1e-15, "linearity");
  // A function of no input returns a zero tangent.
  jl::Fn constant = [](const TensorList& q) { return TensorList{jl::full({2}, DType::Float64, 1.0)}; };
  auto z = to_vec(jl::jvp(constant, p, t).tangents[0]);
  for (double v : z) EXPECT_EQ(v, 0.0);
}

TEST(Vjp, TranspositionIdentity) {
  // <u, J v> == <J^T u, v> for f(x, W) = tanh(x @ W), with a batched x to cover the shared-weight VJP path.
  for (Shape xs : {Shape{4, 3}, Shape{2, 4, 3}}) {
    TensorList p = {random_tensor(xs, 120), random_tensor({3, 5}, 121)};
    TensorList v = like(p, 122);
    Shape ys = xs;
    ys.back() = 5;
    Tensor u = random_tensor(ys, 123);
    jl::VjpResult r = jl::vjp(tanh_linear, p);
    ASSERT_EQ(r.pullback.num_outputs(), 1u);
    TensorList jtu = r.pullback({u});
    ASSERT_EQ(jtu.size(), 2u);
    EXPECT_EQ(jtu[0].shape(), p[0].shape());
    EXPECT_EQ(jtu[1].shape(), p[1].shape());
    Tensor jv = jl::jvp(tanh_linear, p, v).tangents[0];
    double lhs = dot(to_vec(u), to_vec(jv)), rhs = dot(jtu, v);
    EXPECT_NEAR(lhs, rhs, 1e-12 * (1 + std::fabs(lhs))) << "x shape " << jl::shape_str(xs);
    // The pullback can be called again and gives the same result.
    TensorList again = r.pullback({u});
    expect_near_vec(to_vec(again[1]), to_vec(jtu[1]), 0, 0, "pullback reuse");
  }
}

TEST(Vjp, BroadcastCotangentsAreSummedBack) {
  TensorList p = {random_tensor({3, 1}, 130), random_tensor({4}, 131)};
  TensorList g = jl::grad([](const TensorList& q) { return TensorList{jl::sum(jl::add(q[0], q[1]))}; }, p);
  ASSERT_EQ(g[0].shape(), (Shape{3, 1}));
  ASSERT_EQ(g[1].shape(), (Shape{4}));
  for (double v : to_vec(g[0])) EXPECT_EQ(v, 4.0);
  for (double v : to_vec(g[1])) EXPECT_EQ(v, 3.0);
  // d/da sum(a * b) = sum over the broadcast axis of b, and vice versa.
  TensorList gm = jl::grad([](const TensorList& q) { return TensorList{jl::sum(jl::mul(q[0], q[1]))}; }, p);
  auto a = to_vec(p[0]), b = to_vec(p[1]);
  double sb = b[0] + b[1] + b[2] + b[3], sa = a[0] + a[1] + a[2];
  for (double v : to_vec(gm[0])) EXPECT_NEAR(v, sb, 1e-14);
  for (double v : to_vec(gm[1])) EXPECT_NEAR(v, sa, 1e-14);
}

TEST(Grad, MlpLossMatchesCentralDifferences) {
  TensorList p = mlp_params(140);
  jl::ValueAndGrad vg = jl::value_and_grad(mlp_loss, p);
  EXPECT_NEAR(vg.value.item(), mlp_loss(p)[0].item(), 1e-15);
  ASSERT_EQ(vg.grads.size(), p.size());
  // Directional derivative along random directions.
  for (unsigned s = 0; s < 3; ++s) {
    TensorList v = like(p, 141 + 10 * s);
    double fd = central_diff(mlp_loss, p, v, 1e-6)[0][0];
    EXPECT_NEAR(dot(vg.grads, v), fd, 1e-8 * (1 + std::fabs(fd)));
  }
}

TEST(Hvp, MatchesFiniteDifferencesOfGrad) {
  TensorList p = mlp_params(150);
  TensorList v = like(p, 151);
  TensorList hv = jl::hvp(mlp_loss, p, v);
  ASSERT_EQ(hv.size(), p.size());
  jl::Fn g = [](const TensorList& q) { return jl::grad(mlp_loss, q); };
  auto fd = central_diff(g, p, v, 1e-5);
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_EQ(hv[i].shape(), p[i].shape());
    expect_near_vec(to_vec(hv[i]), fd[i], 1e-6, 1e-8, "hvp vs fd of grad");
  }
  // The Hessian is symmetric: <w, H v> == <H w, v>.
  TensorList w = like(p, 152);
  double a = dot(w, hv), b = dot(jl::hvp(mlp_loss, p, w), v);
  EXPECT_NEAR(a, b, 1e-12 * (1 + std::fabs(a)));
}

TEST(Hvp, ReverseOverReverseEqualsForwardOverReverse) {
  TensorList p = mlp_params(160);
  TensorList v = like(p, 161);
  TensorList fwd_rev = jl::hvp(mlp_loss, p, v);
  // grad_p <grad f(p), v>: the inner grad runs inside the outer vjp, so its sweep is recorded.
  jl::Fn gv = [&v](const TensorList& q) {
    TensorList g = jl::grad(mlp_loss, q);
    Tensor s = jl::sum(jl::mul(g[0], v[0]));
    for (size_t i = 1; i < g.size(); ++i) s = jl::add(s, jl::sum(jl::mul(g[i], v[i])));
    return TensorList{s};
  };
  TensorList rev_rev = jl::grad(gv, p);
  // Reverse-over-forward: grad_p of the JVP <grad f(p), v>.
  jl::Fn jv = [&v](const TensorList& q) { return jl::jvp(mlp_loss, q, v).tangents; };
  TensorList rev_fwd = jl::grad(jv, p);
  ASSERT_EQ(rev_rev.size(), p.size());
  ASSERT_EQ(rev_fwd.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    expect_near_vec(to_vec(rev_rev[i]), to_vec(fwd_rev[i]), 1e-11, 1e-13, "reverse-over-reverse");
    expect_near_vec(to_vec(rev_fwd[i]), to_vec(fwd_rev[i]), 1e-11, 1e-13, "reverse-over-forward");
  }
}

TEST(Jvp, ForwardOverForwardSecondDerivativeOfTanh) {
  auto xv = random_vec(6, 170, -1.5, 1.5);
  Tensor x = from_vec(xv, {6});
  Tensor ones = jl::full({6}, DType::Float64, 1.0);
  jl::Fn d1 = [&ones](const TensorList& q) {
    return jl::jvp([](const TensorList& r) { return TensorList{jl::tanh(r[0])}; }, q, {ones}).tangents;
  };
  Tensor d2 = jl::jvp(d1, {x}, {ones}).tangents[0];
  auto got = to_vec(d2), first = to_vec(d1({x})[0]);
  for (size_t i = 0; i < xv.size(); ++i) {
    double t = std::tanh(xv[i]);
    EXPECT_NEAR(first[i], 1 - t * t, 1e-14);
    EXPECT_NEAR(got[i], -2 * t * (1 - t * t), 1e-14);
  }
}

TEST(Jvp, Float32TanhOfMatmul) {
  TensorList p = {random_tensor({4, 3}, 180, DType::Float32), random_tensor({3, 5}, 181, DType::Float32)};
  TensorList t = like(p, 182);
  jl::JvpResult r = jl::jvp(tanh_linear, p, t);
  EXPECT_EQ(r.tangents[0].dtype(), DType::Float32);
  // Same computation in float64 on the float32-rounded inputs.
  TensorList p64, t64;
  for (auto& a : p) p64.push_back(Tensor(a.value().astype(DType::Float64)));
  for (auto& a : t) t64.push_back(Tensor(a.value().astype(DType::Float64)));
  expect_near_vec(to_vec(r.tangents[0]), to_vec(jl::jvp(tanh_linear, p64, t64).tangents[0]), 1e-5, 1e-6, "f32");
}
