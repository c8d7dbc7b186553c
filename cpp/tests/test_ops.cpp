// Forward values of ops and kernels against plain reference loops.
#include <gtest/gtest.h>

#include "jaclab/kernels.h"
#include "jaclab/ops.h"
#include "test_util.h"

using namespace jltest;
namespace jl = jaclab;

// ---- matmul -------------------------------------------------------------------------------------

TEST(Matmul, TwoDMatchesNaiveLoopFloat64) {
  const int64_t M = 7, K = 5, N = 3;
  auto av = random_vec(M * K, 1), bv = random_vec(K * N, 2);
  Tensor c = jl::matmul(from_vec(av, {M, K}), from_vec(bv, {K, N}));
  EXPECT_EQ(c.shape(), (Shape{M, N}));
  EXPECT_EQ(c.dtype(), DType::Float64);
  expect_near_vec(to_vec(c), naive_matmul(av, bv, M, K, N), 1e-12, 1e-12);
}

TEST(Matmul, TwoDMatchesNaiveLoopFloat32) {
  const int64_t M = 16, K = 33, N = 9;
  auto av = random_vec(M * K, 3), bv = random_vec(K * N, 4);
  Tensor c = jl::matmul(from_vec(av, {M, K}, DType::Float32), from_vec(bv, {K, N}, DType::Float32));
  EXPECT_EQ(c.dtype(), DType::Float32);
  // Round the inputs to float first so only the accumulation differs.
  auto af = to_vec(from_vec(av, {M, K}, DType::Float32)), bf = to_vec(from_vec(bv, {K, N}, DType::Float32));
  expect_near_vec(to_vec(c), naive_matmul(af, bf, M, K, N), 1e-5, 1e-5);
}

TEST(Matmul, BatchedMatchesPerBatchLoop) {
  const int64_t B = 3, M = 4, K = 6, N = 5;
  auto av = random_vec(B * M * K, 5), bv = random_vec(B * K * N, 6);
  Tensor c = jl::matmul(from_vec(av, {B, M, K}), from_vec(bv, {B, K, N}));
  ASSERT_EQ(c.shape(), (Shape{B, M, N}));
  auto cv = to_vec(c);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> a1(av.begin() + b * M * K, av.begin() + (b + 1) * M * K);
    std::vector<double> b1(bv.begin() + b * K * N, bv.begin() + (b + 1) * K * N);
    std::vector<double> c1(cv.begin() + b * M * N, cv.begin() + (b + 1) * M * N);
    expect_near_vec(c1, naive_matmul(a1, b1, M, K, N), 1e-12, 1e-12, "batch");
  }
}

TEST(Matmul, BatchedTimesSharedMatrix) {  // (B, T, K) @ (K, N): the folded-GEMM fast path
  const int64_t B = 2, T = 3, K = 4, N = 5;
  auto av = random_vec(B * T * K, 7), bv = random_vec(K * N, 8);
  Tensor c = jl::matmul(from_vec(av, {B, T, K}), from_vec(bv, {K, N}));
  ASSERT_EQ(c.shape(), (Shape{B, T, N}));
  expect_near_vec(to_vec(c), naive_matmul(av, bv, B * T, K, N), 1e-12, 1e-12);
}

TEST(Matmul, BroadcastBatchDims) {  // (2, 1, M, K) @ (3, K, N) -> (2, 3, M, N)
  const int64_t M = 2, K = 3, N = 4;
  auto av = random_vec(2 * M * K, 9), bv = random_vec(3 * K * N, 10);
  Tensor c = jl::matmul(from_vec(av, {2, 1, M, K}), from_vec(bv, {3, K, N}));
  ASSERT_EQ(c.shape(), (Shape{2, 3, M, N}));
  auto cv = to_vec(c);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j) {
      std::vector<double> a1(av.begin() + i * M * K, av.begin() + (i + 1) * M * K);
      std::vector<double> b1(bv.begin() + j * K * N, bv.begin() + (j + 1) * K * N);
      std::vector<double> c1(cv.begin() + (i * 3 + j) * M * N, cv.begin() + (i * 3 + j + 1) * M * N);
      expect_near_vec(c1, naive_matmul(a1, b1, M, K, N), 1e-12, 1e-12, "broadcast batch");
    }
}

TEST(Matmul, TransposedViews) {
  // A^T @ B^T with both operands strided views (no copy made by transpose).
  const int64_t M = 4, K = 6, N = 3;
  auto atv = random_vec(K * M, 11), btv = random_vec(N * K, 12);  // A^T is (K, M), B^T is (N, K)
  Tensor at = from_vec(atv, {K, M}), bt = from_vec(btv, {N, K});
  Tensor a = jl::transpose(at), b = jl::transpose(bt);
  ASSERT_FALSE(a.value().is_contiguous());
  ASSERT_FALSE(b.value().is_contiguous());
  ASSERT_EQ(a.value().storage(), at.value().storage());  // a view
  std::vector<double> av(M * K), bv(K * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) av[i * K + k] = atv[k * M + i];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) bv[k * N + j] = btv[j * K + k];
  auto want = naive_matmul(av, bv, M, K, N);
  expect_near_vec(to_vec(jl::matmul(a, b)), want, 1e-12, 1e-12, "T,T");
  expect_near_vec(to_vec(jl::matmul(a, from_vec(bv, {K, N}))), want, 1e-12, 1e-12, "T,N");
  expect_near_vec(to_vec(jl::matmul(from_vec(av, {M, K}), b)), want, 1e-12, 1e-12, "N,T");
}

TEST(Matmul, BatchedSwapaxesViews) {  // (B, K, M)^T @ (B, K, N)
  const int64_t B = 3, M = 2, K = 5, N = 4;
  auto atv = random_vec(B * K * M, 13), bv = random_vec(B * K * N, 14);
  Tensor a = jl::swapaxes(from_vec(atv, {B, K, M}), -1, -2);
  ASSERT_EQ(a.shape(), (Shape{B, M, K}));
  Tensor c = jl::matmul(a, from_vec(bv, {B, K, N}));
  auto cv = to_vec(c);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> a1(M * K), b1(bv.begin() + b * K * N, bv.begin() + (b + 1) * K * N);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) a1[i * K + k] = atv[b * K * M + k * M + i];
    std::vector<double> c1(cv.begin() + b * M * N, cv.begin() + (b + 1) * M * N);
    expect_near_vec(c1, naive_matmul(a1, b1, M, K, N), 1e-12, 1e-12, "batch swapaxes");
  }
}

TEST(Matmul, OneDOperandsFollowNumPy) {
  auto av = random_vec(6, 15), bv = random_vec(6 * 2, 16), vv = random_vec(6, 17);
  Tensor A = from_vec(bv, {2, 6});  // (2, 6)
  Tensor v = from_vec(vv, {6});
  Tensor mv = jl::matmul(A, v);
  EXPECT_EQ(mv.shape(), (Shape{2}));
  expect_near_vec(to_vec(mv), naive_matmul(bv, vv, 2, 6, 1), 1e-12, 1e-12, "matrix @ vector");
  Tensor inner = jl::matmul(from_vec(av, {6}), v);
  EXPECT_EQ(inner.ndim(), 0);
  EXPECT_NEAR(inner.item(), dot(av, vv), 1e-12);
  Tensor vm = jl::matmul(v, jl::transpose(A));  // (6,) @ (6, 2) -> (2,)
  EXPECT_EQ(vm.shape(), (Shape{2}));
  expect_near_vec(to_vec(vm), to_vec(mv), 1e-12, 1e-12, "vector @ matrix");
}

TEST(Matmul, EmptyInnerDimGivesZeros) {
  Tensor c = jl::matmul(jl::full({3, 0}, DType::Float64, 0), jl::full({0, 2}, DType::Float64, 0));
  ASSERT_EQ(c.shape(), (Shape{3, 2}));
  for (double x : to_vec(c)) EXPECT_EQ(x, 0.0);
}

TEST(Kernels, MatmulOnArraysMatchesOps) {
  auto av = random_vec(12, 18), bv = random_vec(20, 19);
  Array a = from_vec(av, {3, 4}).value(), b = from_vec(bv, {4, 5}).value();
  expect_near_vec(to_vec(jl::kernels::matmul(a, b)), naive_matmul(av, bv, 3, 4, 5), 1e-12, 1e-12);
}

// ---- elementwise with broadcasting ---------------------------------------------------------------

TEST(Elementwise, BroadcastRowAndColumn) {  // (3, 1) op (4,) -> (3, 4)
  auto av = random_vec(3, 20), bv = random_vec(4, 21, 0.5, 2.0);
  Tensor a = from_vec(av, {3, 1}), b = from_vec(bv, {4});
  struct Case { const char* name; Tensor got; double (*f)(double, double); };
  Case cases[] = {
      {"add", jl::add(a, b), [](double x, double y) { return x + y; }},
      {"sub", jl::sub(a, b), [](double x, double y) { return x - y; }},
      {"mul", jl::mul(a, b), [](double x, double y) { return x * y; }},
      {"div", jl::div(a, b), [](double x, double y) { return x / y; }},
  };
  for (auto& c : cases) {
    ASSERT_EQ(c.got.shape(), (Shape{3, 4})) << c.name;
    auto g = to_vec(c.got);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) EXPECT_NEAR(g[i * 4 + j], c.f(av[i], bv[j]), 1e-14) << c.name;
  }
}

TEST(Elementwise, BroadcastThreeD) {  // (2, 1, 4) * (3, 1) -> (2, 3, 4)
  auto av = random_vec(8, 22), bv = random_vec(3, 23);
  Tensor c = jl::mul(from_vec(av, {2, 1, 4}), from_vec(bv, {3, 1}));
  ASSERT_EQ(c.shape(), (Shape{2, 3, 4}));
  auto g = to_vec(c);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_NEAR(g[(i * 3 + j) * 4 + k], av[i * 4 + k] * bv[j], 1e-14);
}

TEST(Elementwise, ScalarAndStridedOperands) {
  auto av = random_vec(6, 24);
  Tensor a = from_vec(av, {2, 3});
  Tensor at = jl::transpose(a);  // (3, 2) strided view
  Tensor s = jl::scalar_like(a, 2.5);
  auto g = to_vec(jl::add(at, s));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j) EXPECT_NEAR(g[i * 2 + j], av[j * 3 + i] + 2.5, 1e-14);
}

TEST(Elementwise, UnaryValues) {
  auto xv = random_vec(10, 25, -2, 2);
  Tensor x = from_vec(xv, {2, 5});
  auto th = to_vec(jl::tanh(x)), ex = to_vec(jl::exp(x)), sq = to_vec(jl::square(x)), sg = to_vec(jl::sigmoid(x));
  auto re = to_vec(jl::relu(x)), sc = to_vec(jl::scale(x, -3.0)), as = to_vec(jl::add_scalar(x, 0.25));
  // Vectorised math (libmvec) may differ from libm by a few ulps: allow ~10 ulps.
  auto near = [](double got, double want) { EXPECT_NEAR(got, want, 1e-14 * (1 + std::fabs(want))); };
  for (size_t i = 0; i < xv.size(); ++i) {
    near(th[i], std::tanh(xv[i]));
    near(ex[i], std::exp(xv[i]));
    near(sq[i], xv[i] * xv[i]);
    near(sg[i], 1.0 / (1.0 + std::exp(-xv[i])));
    EXPECT_EQ(re[i], xv[i] > 0 ? xv[i] : 0.0);
    near(sc[i], -3.0 * xv[i]);
    near(as[i], xv[i] + 0.25);
  }
}

// ---- reductions -----------------------------------------------------------------------------------

namespace {
// Reference sum of a (2, 3, 4) array over `axes` (bitmask), keepdims = false.
std::vector<double> ref_sum_234(const std::vector<double>& x, unsigned mask) {
  const int64_t n[3] = {2, 3, 4};
  int64_t m[3];
  for (int d = 0; d < 3; ++d) m[d] = (mask >> d) & 1 ? 1 : n[d];
  std::vector<double> r(static_cast<size_t>(m[0] * m[1] * m[2]), 0.0);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) {
        int64_t oi = m[0] == 1 ? 0 : i, oj = m[1] == 1 ? 0 : j, ok = m[2] == 1 ? 0 : k;
        r[(oi * m[1] + oj) * m[2] + ok] += x[(i * 3 + j) * 4 + k];
      }
  return r;
}
}  // namespace

TEST(Reduce, SumOverEveryAxisSubset) {
  auto xv = random_vec(24, 26);
  Tensor x = from_vec(xv, {2, 3, 4});
  const Shape full{2, 3, 4};
  for (unsigned mask = 1; mask < 8; ++mask) {
    std::vector<int> axes;
    Shape keep = full, drop;
    for (int d = 0; d < 3; ++d) {
      if ((mask >> d) & 1) {
        axes.push_back(d);
        keep[d] = 1;
      } else {
        drop.push_back(full[d]);
      }
    }
    auto want = ref_sum_234(xv, mask);
    Tensor s = jl::sum(x, axes, false);
    EXPECT_EQ(s.shape(), drop) << "mask " << mask;
    expect_near_vec(to_vec(s), want, 1e-13, 1e-13, "sum");
    Tensor sk = jl::sum(x, axes, true);
    EXPECT_EQ(sk.shape(), keep) << "mask " << mask;
    expect_near_vec(to_vec(sk), want, 1e-13, 1e-13, "sum keepdims");
  }
}

TEST(Reduce, NegativeAxesAndDefaultAll) {
  auto xv = random_vec(24, 27);
  Tensor x = from_vec(xv, {2, 3, 4});
  expect_near_vec(to_vec(jl::sum(x, {-1})), to_vec(jl::sum(x, {2})), 0, 0, "axis -1");
  expect_near_vec(to_vec(jl::sum(x, {-3, -2})), to_vec(jl::sum(x, {0, 1})), 0, 0, "axes -3,-2");
  Tensor all = jl::sum(x);
  EXPECT_EQ(all.ndim(), 0);
  double s = 0;
  for (double v : xv) s += v;
  EXPECT_NEAR(all.item(), s, 1e-13);
  EXPECT_NEAR(jl::mean(x).item(), s / 24, 1e-14);
  expect_near_vec(to_vec(jl::mean(x, {1})), to_vec(jl::scale(jl::sum(x, {1}), 1.0 / 3)), 1e-15, 1e-15, "mean");
}

TEST(Reduce, SumOfStridedView) {
  auto xv = random_vec(12, 28);
  Tensor xt = jl::transpose(from_vec(xv, {3, 4}));  // (4, 3)
  auto s = to_vec(jl::sum(xt, {1}));                // sums rows of xt = columns of x... i.e. over the original axis 0
  ASSERT_EQ(s.size(), 4u);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(s[j], xv[j] + xv[4 + j] + xv[8 + j], 1e-14);
}

TEST(Reduce, SumToUndoesBroadcast) {
  auto xv = random_vec(24, 29);
  Tensor x = from_vec(xv, {2, 3, 4});
  Tensor s31 = jl::sum_to(x, {3, 1});
  EXPECT_EQ(s31.shape(), (Shape{3, 1}));
  expect_near_vec(to_vec(s31), to_vec(jl::sum(x, {0, 2})), 1e-13, 1e-13, "sum_to (3,1)");
  expect_near_vec(to_vec(jl::sum_to(x, {4})), to_vec(jl::sum(x, {0, 1})), 1e-13, 1e-13, "sum_to (4,)");
}
