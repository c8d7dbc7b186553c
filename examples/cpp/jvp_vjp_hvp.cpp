// JVP, VJP and HVP of a small tanh MLP through jaclab's C++ API, each checked against central
// finite differences. Exit code 0 when all agree, 1 otherwise.
//
//   y(x; W1, b1, W2, b2) = tanh(x W1 + b1) W2 + b2          x: (B, D), y: (B, C)
//   L = 0.5 * mean(y^2)                                      (scalar, for the HVP)
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "jaclab/ops.h"
#include "jaclab/transforms.h"

using jaclab::Array;
using jaclab::DType;
using jaclab::Shape;
using jaclab::Tensor;
using jaclab::TensorList;

namespace {

Tensor random_tensor(const Shape& shape, std::mt19937_64& rng) {
  Array a = Array::empty(shape, DType::Float64);
  std::normal_distribution<double> n(0.0, 1.0);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<double>()[i] = n(rng) / std::sqrt(static_cast<double>(shape.back()));
  return Tensor(a);
}

std::vector<double> values(const Tensor& t) {
  Array c = t.value().contiguous();
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}

double dot(const TensorList& a, const TensorList& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = values(a[i]), y = values(b[i]);
    for (size_t k = 0; k < x.size(); ++k) s += x[k] * y[k];
  }
  return s;
}

// p + eps * v
TensorList shifted(const TensorList& p, double eps, const TensorList& v) {
  TensorList r;
  for (size_t i = 0; i < p.size(); ++i) r.push_back(jaclab::add(p[i], jaclab::scale(v[i], eps)));
  return r;
}

// Largest |a - b| / (atol + rtol |b|) over all elements: <= 1 means "close".
double mismatch(const TensorList& a, const std::vector<std::vector<double>>& b, double rtol, double atol) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = values(a[i]);
    for (size_t k = 0; k < x.size(); ++k) worst = std::max(worst, std::fabs(x[k] - b[i][k]) / (atol + rtol * std::fabs(b[i][k])));
  }
  return worst;
}

std::vector<std::vector<double>> central_diff(const jaclab::Fn& f, const TensorList& p, const TensorList& v, double eps) {
  TensorList fp = f(shifted(p, eps, v)), fm = f(shifted(p, -eps, v));
  std::vector<std::vector<double>> r;
  for (size_t i = 0; i < fp.size(); ++i) {
    auto a = values(fp[i]), b = values(fm[i]);
    for (size_t k = 0; k < a.size(); ++k) a[k] = (a[k] - b[k]) / (2 * eps);
    r.push_back(a);
  }
  return r;
}

// p = {x, W1, b1, W2, b2}
TensorList mlp(const TensorList& p) {
  Tensor h = jaclab::tanh(jaclab::add(jaclab::matmul(p[0], p[1]), p[2]));
  return {jaclab::add(jaclab::matmul(h, p[3]), p[4])};
}
TensorList loss(const TensorList& p) { return {jaclab::scale(jaclab::mean(jaclab::square(mlp(p)[0])), 0.5)}; }

void print_row(const char* label, const Tensor& t) {
  auto v = values(t);
  std::printf("  %-26s", label);
  for (size_t k = 0; k < v.size() && k < 5; ++k) std::printf(" % .6f", v[k]);
  std::printf("%s\n", v.size() > 5 ? " ..." : "");
}

bool report(const char* what, double worst) {
  bool ok = worst <= 1.0;
  std::printf("%-4s %s (max scaled error %.3g)\n\n", ok ? "OK" : "FAIL", what, worst);
  return ok;
}

}  // namespace

int main() {
  const int64_t B = 4, D = 3, H = 8, C = 2;
  std::mt19937_64 rng(0);
  TensorList p = {random_tensor({B, D}, rng), random_tensor({D, H}, rng), random_tensor({H}, rng),
                  random_tensor({H, C}, rng), random_tensor({C}, rng)};
  TensorList v = {random_tensor({B, D}, rng), random_tensor({D, H}, rng), random_tensor({H}, rng),
                  random_tensor({H, C}, rng), random_tensor({C}, rng)};
  Tensor u = random_tensor({B, C}, rng);
  bool ok = true;

  std::printf("tanh MLP: x (%lld, %lld) -> hidden %lld -> y (%lld, %lld)\n\n", (long long)B, (long long)D,
              (long long)H, (long long)B, (long long)C);

  // JVP: J v, forward mode, against (f(p + eps v) - f(p - eps v)) / 2 eps.
  jaclab::JvpResult j = jaclab::jvp(mlp, p, v);
  auto jv_fd = central_diff(mlp, p, v, 1e-6);
  std::printf("JVP  J v  (first row of y's tangent)\n");
  print_row("jaclab::jvp", j.tangents[0]);
  std::printf("  %-26s", "central differences");
  for (int k = 0; k < 2; ++k) std::printf(" % .6f", jv_fd[0][k]);
  std::printf("\n");
  ok &= report("jvp matches finite differences", mismatch(j.tangents, jv_fd, 1e-6, 1e-8));

  // VJP: J^T u, reverse mode. Checked through <J^T u, v> = <u, J v>, with J v from finite differences.
  jaclab::VjpResult r = jaclab::vjp(mlp, p);
  TensorList jtu = r.pullback({u});
  double lhs = dot(jtu, v), rhs = 0;
  {
    auto uv = values(u);
    for (size_t k = 0; k < uv.size(); ++k) rhs += uv[k] * jv_fd[0][k];
  }
  std::printf("VJP  J^T u  (gradient w.r.t. b2, then W1's first row)\n");
  print_row("pullback: d/db2", jtu[4]);
  print_row("pullback: d/dW1 (row 0)", jaclab::reshape(jtu[1], {-1}));
  std::printf("  <J^T u, v> = % .10f   <u, J v>_fd = % .10f\n", lhs, rhs);
  ok &= report("vjp satisfies <J^T u, v> = <u, J v>", std::fabs(lhs - rhs) / (1e-8 + 1e-6 * std::fabs(rhs)));

  // HVP: H v of the scalar loss, forward-over-reverse, against finite differences of the gradient.
  TensorList hv = jaclab::hvp(loss, p, v);
  jaclab::Fn g = [](const TensorList& q) { return jaclab::grad(loss, q); };
  auto hv_fd = central_diff(g, p, v, 1e-5);
  std::printf("HVP  H v  of L = 0.5 mean(y^2)  (component for b1)\n");
  print_row("jaclab::hvp", hv[2]);
  std::printf("  %-26s", "finite differences of grad");
  for (size_t k = 0; k < 5; ++k) std::printf(" % .6f", hv_fd[2][k]);
  std::printf(" ...\n");
  ok &= report("hvp matches finite differences of grad", mismatch(hv, hv_fd, 1e-5, 1e-8));

  std::printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
