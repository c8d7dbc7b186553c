// Runge-Kutta optimizers (papers.md item 2): explicit RK steps of the gradient flow
//   theta' = X(theta),   X(theta) = -P^{-1} grad L_B(theta)      (P = I without preconditioner)
// with the minibatch B fixed for all stages of a step. For a Butcher tableau (a, b, c), s stages:
//   k_i = X(theta + h sum_{j<i} a_ij k_j),     theta <- theta + h sum_i b_i k_i
// Methods: euler (= gradient descent), heun, midpoint, rk4 (classic), and two embedded pairs with
// error control: rk23 = Bogacki-Shampine 3(2) and rk45 = Dormand-Prince 5(4) (SciPy's names).
// For a pair with weights b (order p, propagated) and b* (order q = p - 1):
//   err = h ||sum_i (b_i - b*_i) k_i||_2;  factor = clip(safety (tol / err)^(1/(q+1)), min_factor, max_factor)
//   (factor = 1 when err == 0)
//   err <= tol: accept, next h = h factor;  otherwise retry the step (same batch, same k_1) with h factor.
// The batch changes every step, so the pairs' FSAL property (k_s = next k_1) is not used.
// Variants (RECONSTRUCTED wiring, papers.md item 2):
//   preconditioner "adam": v <- b2 v + (1 - b2) g_1^2 once per step from the first-stage gradient,
//                          P = sqrt(v / (1 - b2^t)) + eps, frozen over the stages of the step;
//   momentum beta > 0:     d = sum_i b_i k_i;  m <- beta m + (1 - beta) d;  theta <- theta + h m / (1 - beta^t).
// Combinations are evaluated as theta + h * (c_1 k_1 + c_2 k_2 + ...), left to right, zero
// coefficients skipped (the Python mirror does the same, so both agree to the last bit).
#include <algorithm>

#include "common.h"

namespace jaclab::optim {
namespace {

struct Tableau {
  const char* name;
  std::vector<std::vector<double>> a;  // a[i] = row i (i coefficients, for stages 0..i-1)
  std::vector<double> b;               // propagated weights (order p)
  std::vector<double> b_low;           // embedded weights (order q = p - 1); empty = not adaptive
  int q = 0;
};

const Tableau& tableau(const std::string& method) {
  static const std::vector<Tableau> all = {
      {"euler", {{}}, {1.0}, {}, 0},
      {"heun", {{}, {1.0}}, {0.5, 0.5}, {}, 0},
      {"midpoint", {{}, {0.5}}, {0.0, 1.0}, {}, 0},
      {"rk4", {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}}, {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, {}, 0},
      {"rk23",  // Bogacki-Shampine 3(2)
       {{}, {1.0 / 2}, {0.0, 3.0 / 4}, {2.0 / 9, 1.0 / 3, 4.0 / 9}},
       {2.0 / 9, 1.0 / 3, 4.0 / 9, 0.0},
       {7.0 / 24, 1.0 / 4, 1.0 / 3, 1.0 / 8},
       2},
      {"rk45",  // Dormand-Prince 5(4)
       {{},
        {1.0 / 5},
        {3.0 / 40, 9.0 / 40},
        {44.0 / 45, -56.0 / 15, 32.0 / 9},
        {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
        {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
        {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
       {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0.0},
       {5179.0 / 57600, 0.0, 7571.0 / 16695, 393.0 / 640, -92097.0 / 339200, 187.0 / 2100, 1.0 / 40},
       4},
  };
  for (auto& t : all)
    if (method == t.name) return t;
  throw_value("RK: unknown method '", method, "' (expected euler, heun, midpoint, rk4, rk23 or rk45)");
}

// out = base + h * (c_1 k_1 + c_2 k_2 + ...), zero coefficients skipped.
template <class T>
void combine(T* out, const T* base, double h, const std::vector<double>& c, const std::vector<Array>& k, int64_t n) {
  for (int64_t e = 0; e < n; ++e) {
    double acc = 0;
    for (size_t j = 0; j < c.size(); ++j)
      if (c[j] != 0) acc = acc + c[j] * k[j].data<T>()[e];
    out[e] = base[e] + h * acc;
  }
}

class RK final : public Optimizer {
 public:
  explicit RK(RKOptions o) : o_(std::move(o)), tab_(tableau(o_.method)) {
    require_lr("RK", o_.lr);
    if (o_.preconditioner != "" && o_.preconditioner != "adam")
      throw_value("RK: preconditioner must be None or 'adam', got '", o_.preconditioner, "'");
    require_unit("RK", "momentum", o_.momentum);
    require_unit("RK", "b2", o_.b2);
    if (!(o_.eps > 0)) throw_value("RK: eps must be positive, got ", o_.eps);
    if (!(o_.tol > 0)) throw_value("RK: tol must be positive, got ", o_.tol);
    if (!(o_.min_factor > 0 && o_.min_factor < 1 && o_.max_factor > 1 && o_.safety > 0 && o_.safety <= 1))
      throw_value("RK: need 0 < min_factor < 1 < max_factor and 0 < safety <= 1");
  }
  bool adaptive() const { return !tab_.b_low.empty(); }
  std::string describe() const override {
    return str_cat("RK(", o_.method, ", lr=", o_.lr, o_.preconditioner.empty() ? "" : ", preconditioner=adam",
                   o_.momentum > 0 ? str_cat(", momentum=", o_.momentum) : "",
                   adaptive() ? str_cat(", tol=", o_.tol) : "", ")");
  }
  State init(const Array& theta) const override {
    State s;
    if (!o_.preconditioner.empty()) s.buffers.emplace("v", zeros_like(theta));
    if (o_.momentum > 0) s.buffers.emplace("m", zeros_like(theta));
    if (adaptive()) s.scalars["h"] = o_.lr;
    return s;
  }

  double step(Array& theta, State& s, const Objective& f) const override {
    double loss = 0;
    with_elem_type(theta.dtype(), [&](auto zero) { loss = step_t<decltype(zero)>(theta, s, f); });
    return loss;
  }

 private:
  template <class T>
  double step_t(Array& theta, State& s, const Objective& f) const {
    const int64_t n = theta.numel();
    const size_t S = tab_.b.size();
    const int64_t t = ++s.t;
    std::vector<Array>& k = s.stages;
    k.assign(S, Array());
    for (auto& ki : k) ki = empty_like(theta);
    Array g = scratch_like(theta, 0), y = scratch_like(theta, 1);
    T* th = theta.data<T>();

    // Stage 1 gradient; the preconditioner P is set from it and frozen for the step.
    const double loss = f(theta, g);
    Array P;
    if (!o_.preconditioner.empty()) {
      Array& v = buffer(s, "v", theta);
      P = empty_like(theta);
      const double c2 = 1 - std::pow(o_.b2, static_cast<double>(t));
      T *vv = v.data<T>(), *pp = P.data<T>();
      const T* gr = g.data<T>();
      for (int64_t e = 0; e < n; ++e) {
        vv[e] = o_.b2 * vv[e] + (1 - o_.b2) * (gr[e] * gr[e]);
        pp[e] = std::sqrt(vv[e] / c2) + o_.eps;
      }
    }
    auto field = [&](const Array& grad, Array& out) {  // X = -P^{-1} g
      const T* gr = grad.data<T>();
      T* o = out.data<T>();
      if (P.defined())
        for (int64_t e = 0; e < n; ++e) o[e] = -gr[e] / P.data<T>()[e];
      else
        for (int64_t e = 0; e < n; ++e) o[e] = -gr[e];
    };
    field(g, k[0]);

    double h = adaptive() ? s.scalars.at("h") : o_.lr;
    for (int tries = 0;; ++tries) {
      for (size_t i = 1; i < S; ++i) {  // k_i = X(theta + h sum_{j<i} a_ij k_j)
        combine<T>(y.data<T>(), th, h, tab_.a[i], k, n);
        f(y, g);
        field(g, k[i]);
      }
      if (!adaptive()) break;
      std::vector<double> db(S);  // b - b*
      for (size_t i = 0; i < S; ++i) db[i] = tab_.b[i] - tab_.b_low[i];
      double e2 = 0;
      for (int64_t e = 0; e < n; ++e) {
        double acc = 0;
        for (size_t j = 0; j < S; ++j)
          if (db[j] != 0) acc = acc + db[j] * k[j].data<T>()[e];
        e2 += acc * acc;
      }
      const double err = h * std::sqrt(e2);
      // err == 0 (e.g. an exact stationary point) says nothing about a larger step: keep h.
      const double factor = err == 0 ? 1.0
                                     : std::clamp(o_.safety * std::pow(o_.tol / err, 1.0 / (tab_.q + 1)),
                                                  o_.min_factor, o_.max_factor);
      s.scalars["err"] = err;
      if (err <= o_.tol) {
        s.scalars["h"] = h * factor;
        break;
      }
      if (tries + 1 >= o_.max_rejections)
        throw_value("RK(", o_.method, "): step rejected ", o_.max_rejections, " times (h = ", h,
                    ", err = ", err, " > tol = ", o_.tol, ")");
      s.scalars["rejected"] += 1;
      h *= factor;
    }

    // theta <- theta + h sum_i b_i k_i   (or the momentum average of the increments)
    if (o_.momentum > 0) {
      Array& m = buffer(s, "m", theta);
      combine<T>(y.data<T>(), std::vector<T>(n, T(0)).data(), 1.0, tab_.b, k, n);  // d = sum_i b_i k_i
      const double beta = o_.momentum, c1 = 1 - std::pow(beta, static_cast<double>(t));
      T* mm = m.data<T>();
      const T* d = y.data<T>();
      for (int64_t e = 0; e < n; ++e) {
        mm[e] = beta * mm[e] + (1 - beta) * d[e];
        th[e] = th[e] + h * (mm[e] / c1);
      }
    } else {
      combine<T>(th, th, h, tab_.b, k, n);
    }
    s.scalars["lr"] = h;
    return loss;
  }

  RKOptions o_;
  const Tableau& tab_;
};

}  // namespace

OptimizerPtr rk(const RKOptions& options) { return std::make_shared<RK>(options); }
std::vector<std::string> rk_methods() { return {"euler", "heun", "midpoint", "rk4", "rk23", "rk45"}; }

}  // namespace jaclab::optim
