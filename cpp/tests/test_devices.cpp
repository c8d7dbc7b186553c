// Device dispatch without a GPU. The host-emulated CUDA backend (jaclab/host_backend.h) keeps
// "cuda:0" arrays in host memory and runs the CPU kernels on them (and throws if a kernel is
// handed an array from another device), so these tests check the plumbing every real backend
// relies on: each kernel call reaches the backend, results stay on the device
// through ops, derivative rules and transforms (seeds, zeros, masks, labels), devices mix only
// where allowed, and the errors name what is wrong. The CUDA kernels themselves are tested
// against the CPU in tests/test_cuda.py on a machine with a GPU.
#include <gtest/gtest.h>

#include "jaclab/backend.h"
#include "jaclab/host_backend.h"
#include "jaclab/kernels.h"
#include "jaclab/nn.h"
#include "jaclab/ops.h"
#include "jaclab/transforms.h"
#include "test_util.h"

using namespace jltest;
namespace jl = jaclab;
namespace kn = jaclab::kernels;
using jl::Device;
using jl::DeviceType;

namespace {

const Device kDev{DeviceType::CUDA, 0};

class Devices : public ::testing::Test {
 protected:
  void SetUp() override { jl::emulate_cuda_on_host(true); }
  void TearDown() override { jl::emulate_cuda_on_host(false); }
};

Tensor on_dev(const Tensor& t) { return jl::to(t, kDev); }
std::vector<double> values(const Tensor& t) {
  EXPECT_EQ(t.device(), kDev) << "result left the device";
  return to_vec(jl::to(t, Device{}));
}

// f on the device (inputs moved there) equals f on the CPU, and stays on the device.
// Equal up to a few ulp: where the device runs the composite rule and the CPU a fused kernel
// (attention's derivatives), the two round differently (libmvec's exp on a short row takes a
// different code path depending on its length).
void expect_near(const std::vector<double>& a, const std::vector<double>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-14 * (1.0 + std::abs(b[i]))) << "element " << i;
}

void expect_same_on_device(const std::function<Tensor(const TensorList&)>& f, const TensorList& cpu_inputs) {
  TensorList d;
  for (auto& t : cpu_inputs) d.push_back(on_dev(t));
  EXPECT_EQ(values(f(d)), to_vec(f(cpu_inputs)));
}

}  // namespace

TEST_F(Devices, OpsRunOnTheDevice) {
  Tensor x = random_tensor({3, 4}, 1), y = random_tensor({4}, 2), W = random_tensor({4, 5}, 3);
  expect_same_on_device([](const TensorList& a) { return jl::tanh(jl::add(a[0], a[1])); }, {x, y});
  expect_same_on_device([](const TensorList& a) { return jl::softmax(jl::matmul(a[0], a[1]), 0); }, {x, W});
  expect_same_on_device([](const TensorList& a) { return jl::sum(jl::mul(a[0], a[0]), {0}, false); }, {x});
  expect_same_on_device([](const TensorList& a) { return jl::layer_norm(a[0], a[1], a[1], 1e-5); }, {x, y});
  expect_same_on_device([](const TensorList& a) { return jl::pow(a[0], 0.0); }, {x});  // a constant: full()
  Tensor q = random_tensor({1, 2, 5, 4}, 4), k = random_tensor({1, 2, 3, 4}, 5), v = random_tensor({1, 2, 3, 4}, 6);
  expect_same_on_device([](const TensorList& a) { return jl::attention(a[0], a[1], a[2], true); }, {q, k, v});
  // Labels given on the CPU follow the logits.
  Tensor labels = from_vec({0, 2, 1}, {3}, DType::Int64);
  Tensor logits = random_tensor({3, 4}, 7);
  EXPECT_EQ(values(jl::cross_entropy(on_dev(logits), labels)), to_vec(jl::cross_entropy(logits, labels)));
}

TEST_F(Devices, DerivativesStayOnTheDevice) {
  Tensor x = random_tensor({3, 4}, 8), W = random_tensor({4, 4}, 9), t = random_tensor({3, 4}, 10);
  auto f = [](const TensorList& a) { return TensorList{jl::sum(jl::square(jl::tanh(jl::matmul(a[0], a[1]))), {}, false)}; };
  auto cpu_g = jl::grad(f, {x, W});
  auto dev_g = jl::grad(f, {on_dev(x), on_dev(W)});  // the seed cotangent is made on the device
  for (int i = 0; i < 2; ++i) EXPECT_EQ(values(dev_g[i]), to_vec(cpu_g[i]));
  auto g = [](const TensorList& a) { return TensorList{jl::attention(a[0], a[0], a[0], true)}; };
  Tensor q = random_tensor({1, 1, 4, 4}, 11), dq = random_tensor({1, 1, 4, 4}, 12);
  auto cpu_j = jl::jvp(g, {q}, {dq});
  auto dev_j = jl::jvp(g, {on_dev(q)}, {dq});  // a host tangent follows its primal
  expect_near(values(dev_j.tangents[0]), to_vec(cpu_j.tangents[0]));  // composite vs fused rule
  auto h = [&](const TensorList& a) { return TensorList{jl::sum(jl::mul(jl::tanh(a[0]), jl::tanh(a[0])), {}, false)}; };
  auto hvp = [&](const Tensor& p, const Tensor& v) {
    return jl::jvp([&](const TensorList& a) { return jl::grad(h, a); }, {p}, {v}).tangents[0];
  };
  EXPECT_EQ(values(hvp(on_dev(x), on_dev(t))), to_vec(hvp(x, t)));
  auto back = jl::vjp(g, {on_dev(q)});
  expect_near(values(back.pullback({dq})[0]), to_vec(jl::vjp(g, {q}).pullback({dq})[0]));  // host cotangent
}

TEST_F(Devices, ToIsDifferentiable) {
  Tensor x = random_tensor({2, 3}, 13);
  auto f = [](const TensorList& a) { return TensorList{jl::sum(jl::tanh(jl::to(a[0], kDev)), {}, false)}; };
  auto g = jl::grad(f, {x});
  EXPECT_EQ(g[0].device(), Device{});  // the cotangent came back to x's device
  auto want = jl::grad([](const TensorList& a) { return TensorList{jl::sum(jl::tanh(a[0]), {}, false)}; }, {x});
  EXPECT_EQ(to_vec(g[0]), to_vec(want[0]));
  EXPECT_EQ(to_vec(jl::to(on_dev(x), Device{})), to_vec(x));
}

TEST_F(Devices, MixingDevicesIsAValueError) {
  Tensor a = random_tensor({3, 4}, 14), b = on_dev(a);
  EXPECT_THROW(jl::add(a, b), jl::ValueError);
  EXPECT_THROW(jl::matmul(b, jl::transpose(a)), jl::ValueError);
  EXPECT_THROW(jl::attention(jl::reshape(b, {1, 1, 3, 4}), jl::reshape(a, {1, 1, 3, 4}), jl::reshape(a, {1, 1, 3, 4})),
               jl::ValueError);
  try {
    jl::add(a, b);
  } catch (const jl::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  // A 0-d CPU scalar joins an op on the device.
  Tensor s = jl::mul(b, jl::scalar_like(b, 2.0));
  EXPECT_EQ(values(s), to_vec(jl::mul(a, jl::scalar_like(a, 2.0))));
  // A device tangent for a CPU primal is refused.
  auto id = [](const TensorList& p) { return p; };
  EXPECT_THROW(jl::jvp(id, {a}, {b}), jl::ValueError);
}

TEST(DevicesWithoutBackend, TensorsOnCudaRaiseARuntimeError) {
  ASSERT_EQ(jl::registered_backend(DeviceType::CUDA), nullptr);  // this test binary has no CUDA
  EXPECT_THROW(Array::empty({2}, DType::Float64, kDev), std::runtime_error);
  EXPECT_THROW(jl::to(random_tensor({2}, 15), kDev), std::runtime_error);
}
