// Stochastic gradient descent and momentum (heavy ball, Nesterov).
#include "common.h"

namespace jaclab::optim {
namespace {

// SGD:  theta <- theta - h g,  g = grad L_B(theta)
class SGD final : public Optimizer {
 public:
  explicit SGD(double lr) : lr_(lr) { require_lr("SGD", lr); }
  std::string describe() const override { return str_cat("SGD(lr=", lr_, ")"); }
  double step(Array& theta, State& s, const Objective& f) const override {
    Array g = scratch_like(theta, 0);
    const double loss = f(theta, g);
    with_elem_type(theta.dtype(), [&](auto zero) {
      using T = decltype(zero);
      T* th = theta.data<T>();
      const T* gr = g.data<T>();
      for (int64_t i = 0, n = theta.numel(); i < n; ++i) th[i] = th[i] - lr_ * gr[i];
    });
    ++s.t;
    s.scalars["lr"] = lr_;
    return loss;
  }

 private:
  double lr_;
};

// Momentum (PyTorch convention; buf starts at 0, so the first step is an SGD step):
//   buf   <- beta buf + g
//   heavy ball: theta <- theta - h buf
//   Nesterov:   theta <- theta - h (g + beta buf)
class Momentum final : public Optimizer {
 public:
  Momentum(double lr, double beta, bool nesterov) : lr_(lr), beta_(beta), nesterov_(nesterov) {
    require_lr("Momentum", lr);
    require_unit("Momentum", "beta", beta);
  }
  std::string describe() const override {
    return str_cat("Momentum(lr=", lr_, ", beta=", beta_, nesterov_ ? ", nesterov" : "", ")");
  }
  State init(const Array& theta) const override {
    State s;
    s.buffers.emplace("m", zeros_like(theta));
    return s;
  }
  double step(Array& theta, State& s, const Objective& f) const override {
    Array g = scratch_like(theta, 0);
    const double loss = f(theta, g);
    Array& m = buffer(s, "m", theta);
    with_elem_type(theta.dtype(), [&](auto zero) {
      using T = decltype(zero);
      T* th = theta.data<T>();
      T* buf = m.data<T>();
      const T* gr = g.data<T>();
      for (int64_t i = 0, n = theta.numel(); i < n; ++i) {
        buf[i] = beta_ * buf[i] + gr[i];
        th[i] = nesterov_ ? th[i] - lr_ * (gr[i] + beta_ * buf[i]) : th[i] - lr_ * buf[i];
      }
    });
    ++s.t;
    s.scalars["lr"] = lr_;
    return loss;
  }

 private:
  double lr_, beta_;
  bool nesterov_;
};

}  // namespace

State Optimizer::init(const Array&) const { return State{}; }

State State::clone() const {
  State c;
  c.t = t;
  c.scalars = scalars;
  for (auto& [k, v] : buffers) c.buffers.emplace(k, v.clone());
  for (auto& k : stages) c.stages.push_back(k.clone());
  return c;
}

OptimizerPtr sgd(double lr) { return std::make_shared<SGD>(lr); }
OptimizerPtr momentum(double lr, double beta, bool nesterov) { return std::make_shared<Momentum>(lr, beta, nesterov); }

}  // namespace jaclab::optim
