// Helpers shared by the C++ unit tests: building tensors from std::vector, reading them back
// (any strides), seeded random inputs and small reference routines.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "jaclab/array.h"
#include "jaclab/ops.h"
#include "jaclab/tensor.h"
#include "jaclab/transforms.h"

namespace jltest {

using jaclab::Array;
using jaclab::DType;
using jaclab::Shape;
using jaclab::Tensor;
using jaclab::TensorList;

inline Tensor from_vec(const std::vector<double>& v, const Shape& shape, DType dt = DType::Float64) {
  Array a = Array::empty(shape, dt);
  EXPECT_EQ(static_cast<int64_t>(v.size()), a.numel());
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::Float64) a.data<double>()[i] = v[i];
    else if (dt == DType::Float32) a.data<float>()[i] = static_cast<float>(v[i]);
    else a.data<int64_t>()[i] = static_cast<int64_t>(v[i]);
  }
  return Tensor(a);
}

// Row-major values of any (possibly strided) tensor, as doubles.
inline std::vector<double> to_vec(const Array& x) {
  Array c = x.contiguous();
  std::vector<double> r(static_cast<size_t>(c.numel()));
  for (size_t i = 0; i < r.size(); ++i) {
    if (c.dtype() == DType::Float64) r[i] = c.data<double>()[i];
    else if (c.dtype() == DType::Float32) r[i] = c.data<float>()[i];
    else r[i] = static_cast<double>(c.data<int64_t>()[i]);
  }
  return r;
}
inline std::vector<double> to_vec(const Tensor& x) { return to_vec(x.value()); }

inline std::vector<double> random_vec(size_t n, unsigned seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

inline Tensor random_tensor(const Shape& shape, unsigned seed, DType dt = DType::Float64, double scale = 1.0) {
  auto v = random_vec(static_cast<size_t>(jaclab::numel_of(shape)), seed, -scale, scale);
  return from_vec(v, shape, dt);
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Sum over a list of tensors of <a_i, b_i>.
inline double dot(const TensorList& a, const TensorList& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += dot(to_vec(a[i]), to_vec(b[i]));
  return s;
}

// x + eps * t, elementwise, for lists of float64 tensors.
inline TensorList axpy(const TensorList& x, double eps, const TensorList& t) {
  TensorList r;
  for (size_t i = 0; i < x.size(); ++i) {
    auto xv = to_vec(x[i]), tv = to_vec(t[i]);
    for (size_t k = 0; k < xv.size(); ++k) xv[k] += eps * tv[k];
    r.push_back(from_vec(xv, x[i].shape(), x[i].dtype()));
  }
  return r;
}

// (f(x + eps t) - f(x - eps t)) / (2 eps), for each output of f.
inline std::vector<std::vector<double>> central_diff(const jaclab::Fn& f, const TensorList& x, const TensorList& t,
                                                     double eps) {
  TensorList fp = f(axpy(x, eps, t)), fm = f(axpy(x, -eps, t));
  std::vector<std::vector<double>> r;
  for (size_t i = 0; i < fp.size(); ++i) {
    auto a = to_vec(fp[i]), b = to_vec(fm[i]);
    for (size_t k = 0; k < a.size(); ++k) a[k] = (a[k] - b[k]) / (2 * eps);
    r.push_back(a);
  }
  return r;
}

// Row-major (M, K) @ (K, N) with a plain triple loop.
inline std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t M,
                                        int64_t K, int64_t N) {
  std::vector<double> c(static_cast<size_t>(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[i * K + k] * b[k * N + j];
      c[i * N + j] = s;
    }
  return c;
}

inline void expect_near_vec(const std::vector<double>& got, const std::vector<double>& want, double rtol,
                            double atol, const char* what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], atol + rtol * std::fabs(want[i])) << what << " at flat index " << i;
}

}  // namespace jltest
