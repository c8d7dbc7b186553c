// Adam (Kingma & Ba) and AdamW (decoupled weight decay, Loshchilov & Hutter).
//   t <- t + 1
//   m <- b1 m + (1 - b1) g                     first moment
//   v <- b2 v + (1 - b2) g^2                   second moment
//   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
//   theta <- theta - h (m_hat / (sqrt(v_hat) + eps) + wd theta)
#include "common.h"

namespace jaclab::optim {
namespace {

class Adam final : public Optimizer {
 public:
  Adam(double lr, double b1, double b2, double eps, double wd) : lr_(lr), b1_(b1), b2_(b2), eps_(eps), wd_(wd) {
    require_lr("Adam", lr);
    require_unit("Adam", "b1", b1);
    require_unit("Adam", "b2", b2);
    if (!(eps > 0)) throw_value("Adam: eps must be positive, got ", eps);
    if (!(wd >= 0)) throw_value("Adam: weight_decay must be >= 0, got ", wd);
  }
  std::string describe() const override {
    return str_cat(wd_ > 0 ? "AdamW" : "Adam", "(lr=", lr_, ", b1=", b1_, ", b2=", b2_, ", eps=", eps_,
                   wd_ > 0 ? str_cat(", weight_decay=", wd_) : "", ")");
  }
  State init(const Array& theta) const override {
    State s;
    s.buffers.emplace("m", zeros_like(theta));
    s.buffers.emplace("v", zeros_like(theta));
    return s;
  }
  double step(Array& theta, State& s, const Objective& f) const override {
    Array g = scratch_like(theta, 0);
    const double loss = f(theta, g);
    Array& m = buffer(s, "m", theta);
    Array& v = buffer(s, "v", theta);
    const int64_t t = ++s.t;
    const double c1 = 1 - std::pow(b1_, static_cast<double>(t)), c2 = 1 - std::pow(b2_, static_cast<double>(t));
    with_elem_type(theta.dtype(), [&](auto zero) {
      using T = decltype(zero);
      T *th = theta.data<T>(), *mm = m.data<T>(), *vv = v.data<T>();
      const T* gr = g.data<T>();
      for (int64_t i = 0, n = theta.numel(); i < n; ++i) {
        mm[i] = b1_ * mm[i] + (1 - b1_) * gr[i];
        vv[i] = b2_ * vv[i] + (1 - b2_) * (gr[i] * gr[i]);
        const double m_hat = mm[i] / c1, v_hat = vv[i] / c2;
        th[i] = th[i] - lr_ * (m_hat / (std::sqrt(v_hat) + eps_) + wd_ * th[i]);
      }
    });
    s.scalars["lr"] = lr_;
    return loss;
  }

 private:
  double lr_, b1_, b2_, eps_, wd_;
};

}  // namespace

OptimizerPtr adam(double lr, double b1, double b2, double eps, double weight_decay) {
  return std::make_shared<Adam>(lr, b1, b2, eps, weight_decay);
}

}  // namespace jaclab::optim
