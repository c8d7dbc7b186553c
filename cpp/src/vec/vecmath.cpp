#include "vecmath.h"

#include <cmath>

namespace jaclab::vecmath {

#define JL_DECLARE(ns)                                        \
  namespace ns {                                              \
  void tanh_d(const double*, double*, int64_t);               \
  void exp_d(const double*, double*, int64_t);                \
  void log_d(const double*, double*, int64_t);                \
  void erf_d(const double*, double*, int64_t);                \
  void gelu_d(const double*, double*, int64_t);               \
  void gelu_grad_d(const double*, double*, int64_t);          \
  void sigmoid_d(const double*, double*, int64_t);            \
  void tanh_f(const float*, float*, int64_t);                 \
  void exp_f(const float*, float*, int64_t);                  \
  void log_f(const float*, float*, int64_t);                  \
  void erf_f(const float*, float*, int64_t);                  \
  void gelu_f(const float*, float*, int64_t);                 \
  void gelu_grad_f(const float*, float*, int64_t);            \
  void sigmoid_f(const float*, float*, int64_t);              \
  }
JL_DECLARE(avx2)
JL_DECLARE(sse2)
#undef JL_DECLARE

namespace {
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
}  // namespace

#define JL_DISPATCH(T, sfx)                                                              \
  void map(Fn fn, const T* x, T* y, int64_t n) {                                         \
    const bool v = use_avx2();                                                           \
    switch (fn) {                                                                        \
      case Fn::Tanh: return v ? avx2::tanh_##sfx(x, y, n) : sse2::tanh_##sfx(x, y, n);   \
      case Fn::Exp: return v ? avx2::exp_##sfx(x, y, n) : sse2::exp_##sfx(x, y, n);      \
      case Fn::Log: return v ? avx2::log_##sfx(x, y, n) : sse2::log_##sfx(x, y, n);      \
      case Fn::Erf: return v ? avx2::erf_##sfx(x, y, n) : sse2::erf_##sfx(x, y, n);      \
      case Fn::Gelu: return v ? avx2::gelu_##sfx(x, y, n) : sse2::gelu_##sfx(x, y, n);   \
      case Fn::GeluGrad:                                                                 \
        return v ? avx2::gelu_grad_##sfx(x, y, n) : sse2::gelu_grad_##sfx(x, y, n);      \
      case Fn::Sigmoid: return v ? avx2::sigmoid_##sfx(x, y, n) : sse2::sigmoid_##sfx(x, y, n); \
    }                                                                                    \
  }
JL_DISPATCH(double, d)
JL_DISPATCH(float, f)
#undef JL_DISPATCH

const char* isa() { return use_avx2() ? "avx2" : "sse2"; }

}  // namespace jaclab::vecmath
