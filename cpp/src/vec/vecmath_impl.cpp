// Compiled three times (JL_VEC_NS = avx512 | avx2 | sse2) with -D__FAST_MATH__ -fno-math-errno -fopenmp-simd,
// which makes glibc declare its SIMD variants so the `omp simd` loops call libmvec (a few ulp,
// special values handled). Only pure elementwise maps live here.
#include <cmath>
#include <cstdint>

namespace jaclab::vecmath::JL_VEC_NS {

constexpr double kSqrt1_2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;

#define JL_MAP(name, T, expr)                                      \
  void name(const T* x, T* y, int64_t n) {   \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {          \
      const T v = x[i];                                            \
      y[i] = (expr);                                               \
    }                                                              \
  }

JL_MAP(tanh_d, double, std::tanh(v))
JL_MAP(exp_d, double, std::exp(v))
JL_MAP(log_d, double, std::log(v))
JL_MAP(erf_d, double, std::erf(v))
JL_MAP(gelu_d, double, 0.5 * v * (1.0 + std::erf(v * kSqrt1_2)))
JL_MAP(gelu_grad_d, double, 0.5 * (1.0 + std::erf(v * kSqrt1_2)) + v * kInvSqrt2Pi * std::exp(-0.5 * v * v))
JL_MAP(sigmoid_d, double, 1.0 / (1.0 + std::exp(-v)))
JL_MAP(tanh_f, float, std::tanh(v))
JL_MAP(exp_f, float, std::exp(v))
JL_MAP(log_f, float, std::log(v))
JL_MAP(erf_f, float, std::erf(v))
JL_MAP(gelu_f, float, 0.5f * v * (1.0f + std::erf(v * float(kSqrt1_2))))
JL_MAP(gelu_grad_f, float,
       0.5f * (1.0f + std::erf(v * float(kSqrt1_2))) + v * float(kInvSqrt2Pi) * std::exp(-0.5f * v * v))
JL_MAP(sigmoid_f, float, 1.0f / (1.0f + std::exp(-v)))
#undef JL_MAP

}  // namespace jaclab::vecmath::JL_VEC_NS
