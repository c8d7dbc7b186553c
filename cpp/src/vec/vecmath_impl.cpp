// Compiled three times (JL_VEC_NS = avx512 | avx2 | sse2) with -D__FAST_MATH__ -fno-math-errno -fopenmp-simd,
// which makes glibc declare its SIMD variants so the `omp simd` loops call libmvec (a few ulp,
// special values handled). Only pure elementwise maps live here.
#include <cmath>
#include <cstdint>

namespace jaclab::vecmath::JL_VEC_NS {

constexpr double kSqrt1_2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;

// float64 tanh on AVX2 (measured there; the AVX-512 and SSE2 builds keep libmvec's tanh, and so
// does float32, where libmvec's tanhf is ~20% faster than this with expm1f):
// tanh|v| = -e / (e + 2) with e = expm1(-2|v|), the sign restored. libmvec's expm1 and one
// division take 2.3 ns per float64 where its tanh takes 3.9 (a (256, 256) tanh on two threads:
// 87 us against 148); the error grows from ~2 to ~4 ulp at most (mean 0.7 ulp; a Newton step on
// the quotient got 2.7 ulp for a third of the gain back, not worth it). tests/test_ops.py checks
// the accuracy and the special values. expm1 rather than exp: no cancellation near 0.
inline double tanh_double(double v) {
#if defined(__FMA__) && !defined(__AVX512F__)
  const double e = std::expm1(-2.0 * std::fabs(v));
  return std::copysign(-e / (e + 2.0), v);
#else
  return std::tanh(v);
#endif
}

#define JL_MAP(name, T, expr)                                      \
  void name(const T* x, T* y, int64_t n) {   \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {          \
      const T v = x[i];                                            \
      y[i] = (expr);                                               \
    }                                                              \
  }

JL_MAP(tanh_d, double, tanh_double(v))
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
