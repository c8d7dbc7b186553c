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
JL_DECLARE(avx512)
JL_DECLARE(avx2)
JL_DECLARE(sse2)
#undef JL_DECLARE

namespace {
enum class Isa { Sse2, Avx2, Avx512 };
Isa best_isa() {
  static const Isa isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? Isa::Avx512
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")      ? Isa::Avx2
                                                                                               : Isa::Sse2;
  return isa;
}
}  // namespace

// One call per ISA copy of `name`: e.g. JL_PICK(tanh_d) runs avx512::tanh_d(x, y, n) on AVX-512.
#define JL_PICK(name)                                       \
  switch (best_isa()) {                                     \
    case Isa::Avx512: return avx512::name(x, y, n);         \
    case Isa::Avx2: return avx2::name(x, y, n);             \
    case Isa::Sse2: return sse2::name(x, y, n);             \
  }                                                         \
  return

#define JL_DISPATCH(T, sfx)                                   \
  void map(Fn fn, const T* x, T* y, int64_t n) {              \
    switch (fn) {                                             \
      case Fn::Tanh: JL_PICK(tanh_##sfx);                     \
      case Fn::Exp: JL_PICK(exp_##sfx);                       \
      case Fn::Log: JL_PICK(log_##sfx);                       \
      case Fn::Erf: JL_PICK(erf_##sfx);                       \
      case Fn::Gelu: JL_PICK(gelu_##sfx);                     \
      case Fn::GeluGrad: JL_PICK(gelu_grad_##sfx);            \
      case Fn::Sigmoid: JL_PICK(sigmoid_##sfx);               \
    }                                                         \
  }
JL_DISPATCH(double, d)
JL_DISPATCH(float, f)
#undef JL_DISPATCH
#undef JL_PICK

const char* isa() {
  switch (best_isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Sse2: return "sse2";
  }
  return "sse2";
}

}  // namespace jaclab::vecmath
