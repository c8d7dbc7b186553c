// Polyak step size / corridor learning rate (Dherin & Rosca, papers.md item 7):
//   h = clip(scale * (L_B(theta) - f_star) / (||g||^2 + eps), 0, max_lr)
//   theta <- theta - h g
// With f_star = 0 this is the corridor learning rate h = L / ||g||^2: in a corridor (H g = 0) the
// loss decreases linearly along the gradient line and one such step reaches L = 0.
#include "common.h"

namespace jaclab::optim {
namespace {

class Polyak final : public Optimizer {
 public:
  Polyak(double scale, double f_star, double max_lr, double eps) : scale_(scale), f_star_(f_star), max_lr_(max_lr), eps_(eps) {
    if (!(scale > 0) || !std::isfinite(scale)) throw_value("Polyak: scale must be a positive finite number, got ", scale);
    if (!(max_lr > 0)) throw_value("Polyak: max_lr must be positive, got ", max_lr);
    if (!(eps >= 0)) throw_value("Polyak: eps must be >= 0, got ", eps);
    if (!std::isfinite(f_star)) throw_value("Polyak: f_star must be finite, got ", f_star);
  }
  std::string describe() const override {
    return str_cat("Polyak(scale=", scale_, ", f_star=", f_star_, ", max_lr=", max_lr_, ")");
  }
  double step(Array& theta, State& s, const Objective& f) const override {
    Array g = scratch_like(theta, 0);
    const double loss = f(theta, g);
    with_elem_type(theta.dtype(), [&](auto zero) {
      using T = decltype(zero);
      T* th = theta.data<T>();
      const T* gr = g.data<T>();
      double g2 = 0;
      for (int64_t i = 0, n = theta.numel(); i < n; ++i) g2 += static_cast<double>(gr[i]) * gr[i];
      const double h = std::min(std::max(scale_ * (loss - f_star_) / (g2 + eps_), 0.0), max_lr_);
      for (int64_t i = 0, n = theta.numel(); i < n; ++i) th[i] = th[i] - h * gr[i];
      s.scalars["lr"] = h;
    });
    ++s.t;
    return loss;
  }

 private:
  double scale_, f_star_, max_lr_, eps_;
};

}  // namespace

OptimizerPtr polyak(double scale, double f_star, double max_lr, double eps) {
  return std::make_shared<Polyak>(scale, f_star, max_lr, eps);
}

}  // namespace jaclab::optim
