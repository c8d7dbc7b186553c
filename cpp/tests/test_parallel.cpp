// The elementwise pool (jaclab/parallel.h): every index exactly once, at any thread count, from
// nested and concurrent callers; and the kernels it splits give the same bits at any count.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <thread>
#include <vector>

#include "jaclab/ops.h"
#include "jaclab/parallel.h"
#include "test_util.h"

namespace jaclab {
namespace {

struct ThreadCount {  // restores the pool's size
  int saved = parallel::num_threads();
  explicit ThreadCount(int n) { parallel::set_num_threads(n); }
  ~ThreadCount() { parallel::set_num_threads(saved); }
};

std::vector<int> visits(int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(n);
  parallel::for_range(n, grain, [&](int64_t b, int64_t e) {
    ASSERT_LE(0, b);
    ASSERT_LE(b, e);
    ASSERT_LE(e, n);
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  std::vector<int> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = hits[i].load();
  return out;
}

TEST(Parallel, EveryIndexOnceAtAnyThreadCount) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadCount tc(threads);
    for (int64_t n : {0, 1, 7, 100, 4097, 100003})
      for (int64_t grain : {1, 16, 1000}) {
        std::vector<int> hits = visits(n, grain);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "threads " << threads << " n " << n << " i " << i;
      }
  }
}

TEST(Parallel, NestedCallsRunInline) {
  ThreadCount tc(3);
  std::atomic<int64_t> total{0};
  parallel::for_range(64, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      parallel::for_range(100, 1, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
  });
  EXPECT_EQ(total.load(), 6400);
}

TEST(Parallel, ConcurrentCallersEachGetAllTheirIndices) {
  ThreadCount tc(2);
  std::atomic<bool> ok{true};
  auto caller = [&] {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<int> hits = visits(5000, 64);
      for (int h : hits) ok = ok && h == 1;
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_TRUE(ok.load());
}

TEST(Parallel, AnExceptionInAChunkReachesTheCaller) {
  ThreadCount tc(2);
  for (int rep = 0; rep < 20; ++rep)  // whichever thread runs the failing chunk
    EXPECT_THROW(parallel::for_range(1000, 10,
                                     [&](int64_t b, int64_t) {
                                       if (b >= 500) throw std::runtime_error("chunk failed");
                                     }),
                 std::runtime_error);
  std::vector<int> hits = visits(1000, 10);  // the pool still works afterwards
  for (int h : hits) EXPECT_EQ(h, 1);
}

TEST(Parallel, KernelsGiveTheSameBitsAtAnyThreadCount) {
  // Large enough to be split: unary (transcendental and cheap), same-shape, scalar and broadcast
  // binaries, affine.
  using jltest::random_tensor;
  // Large enough (> 2 x 256K elements) that the cheap loops are split too.
  Tensor x = random_tensor({520, 1031}, 1);
  Tensor y = random_tensor({520, 1031}, 2);
  Tensor row = random_tensor({1031}, 3);
  Tensor col = add_scalar(random_tensor({520, 1}, 4, DType::Float32), 3.0);  // no division by ~0
  Tensor x32 = random_tensor({520, 1031}, 5, DType::Float32);
  auto run = [&] {
    return std::vector<Tensor>{tanh(x), square(x), mul(x, y), add(x, row), sub(row, x), div(x32, col),
                               scale(x, 0.5), add_scalar(x32, 2.0), mul(x, scalar_like(x, 3.0)),
                               reshape(transpose(x), {-1}),  // tiled transposing copy
                               reshape(permute(reshape(x, {20, 26, 1031}), {1, 0, 2}), {-1})};  // row copies
  };
  std::vector<Tensor> serial;
  {
    ThreadCount tc(1);
    serial = run();
  }
  for (int threads : {2, 4}) {
    ThreadCount tc(threads);
    std::vector<Tensor> par = run();
    for (size_t k = 0; k < par.size(); ++k) EXPECT_EQ(jltest::to_vec(par[k]), jltest::to_vec(serial[k])) << "result " << k;
  }
}

// GEMMs are cut into row or column blocks, one single-threaded BLAS call each, on the pool.
// Against a naive product at 1-4 threads: both cuts (tall and wide C), ragged block edges,
// transposed layouts (views), batched slices; and from two caller threads at once (one of them
// finds the pool busy and runs its products unsplit).
TEST(Parallel, SplitMatmulsMatchANaiveProduct) {
  const std::vector<std::array<int64_t, 3>> shapes = {{256, 256, 256}, {300, 130, 90}, {90, 130, 301}, {33, 517, 900}};
  for (int threads : {1, 2, 3, 4}) {
    ThreadCount tc(threads);
    unsigned seed = 10;
    for (auto [M, K, N] : shapes) {
      Tensor a = jltest::random_tensor({M, K}, ++seed), b = jltest::random_tensor({K, N}, ++seed);
      const auto want = jltest::naive_matmul(jltest::to_vec(a), jltest::to_vec(b), M, K, N);
      jltest::expect_near_vec(jltest::to_vec(matmul(a, b)), want, 1e-12, 1e-12);
      Tensor at = transpose(jltest::random_tensor({K, M}, ++seed));  // op(A) = A^T, no copy
      Tensor bt = transpose(jltest::random_tensor({N, K}, ++seed));
      jltest::expect_near_vec(jltest::to_vec(matmul(at, bt)),
                              jltest::naive_matmul(jltest::to_vec(at), jltest::to_vec(bt), M, K, N), 1e-12, 1e-12);
    }
    Tensor a = jltest::random_tensor({5, 64, 48}, 1), b = jltest::random_tensor({5, 48, 80}, 2);
    std::vector<double> av = jltest::to_vec(a), bv = jltest::to_vec(b), got = jltest::to_vec(matmul(a, b));
    for (int64_t i = 0; i < 5; ++i) {
      std::vector<double> ai(av.begin() + i * 64 * 48, av.begin() + (i + 1) * 64 * 48);
      std::vector<double> bi(bv.begin() + i * 48 * 80, bv.begin() + (i + 1) * 48 * 80);
      std::vector<double> gi(got.begin() + i * 64 * 80, got.begin() + (i + 1) * 64 * 80);
      jltest::expect_near_vec(gi, jltest::naive_matmul(ai, bi, 64, 48, 80), 1e-12, 1e-12);
    }
  }
}

TEST(Parallel, ConcurrentCallersSplitMatmulsCorrectly) {
  ThreadCount tc(2);
  Tensor a = jltest::random_tensor({200, 150}, 3), b = jltest::random_tensor({150, 170}, 4);
  const auto want = jltest::naive_matmul(jltest::to_vec(a), jltest::to_vec(b), 200, 150, 170);
  std::atomic<bool> ok{true};
  auto caller = [&] {
    for (int rep = 0; rep < 30; ++rep) {
      const auto got = jltest::to_vec(matmul(a, b));
      for (size_t i = 0; i < got.size(); ++i) ok = ok && std::abs(got[i] - want[i]) <= 1e-12 * (1 + std::abs(want[i]));
    }
  };
  std::thread t1(caller), t2(caller);
  t1.join();
  t2.join();
  EXPECT_TRUE(ok.load());
}

}  // namespace
}  // namespace jaclab
