// Vectorised elementwise math (glibc libmvec SIMD variants of tanh, exp, log, erf), picked at
// run time for the CPU (AVX2+FMA or the SSE2 baseline). Accuracy: libmvec's (a few ulp).
#pragma once
#include <cstdint>

namespace jaclab::vecmath {
enum class Fn { Tanh, Exp, Log, Erf, Gelu, GeluGrad, Sigmoid };
// y[i] = fn(x[i]); x and y may alias.
void map(Fn fn, const double* x, double* y, int64_t n);
void map(Fn fn, const float* x, float* y, int64_t n);
bool available();   // built with libmvec
const char* isa();  // "avx512", "avx2" or "sse2": the copy of the loops in use
}  // namespace jaclab::vecmath
