// Bad input raises jaclab::ValueError (shapes, axes, values) or jaclab::TypeError (dtypes).
#include <gtest/gtest.h>

#include <limits>
#include <type_traits>

#include "jaclab/errors.h"
#include "jaclab/kernels.h"
#include "jaclab/model.h"
#include "jaclab/ops.h"
#include "jaclab/transforms.h"
#include "test_util.h"

using namespace jltest;
namespace jl = jaclab;

static_assert(std::is_base_of_v<std::invalid_argument, jl::ValueError>);
static_assert(std::is_base_of_v<std::invalid_argument, jl::TypeError>);

namespace {
Tensor f64(const Shape& s) { return jl::full(s, DType::Float64, 0.5); }
Tensor f32(const Shape& s) { return jl::full(s, DType::Float32, 0.5); }
Tensor i64(const Shape& s) { return jl::full(s, DType::Int64, 1); }
TensorList identity(const TensorList& p) { return p; }
}  // namespace

TEST(Errors, MatmulShapes) {
  EXPECT_THROW(jl::matmul(f64({2, 3}), f64({4, 5})), jl::ValueError);
  EXPECT_THROW(jl::matmul(f64({2, 3, 4}), f64({2, 5, 6})), jl::ValueError);
  EXPECT_THROW(jl::matmul(f64({2, 2, 3}), f64({3, 3, 4})), jl::ValueError);  // batch dims 2 vs 3
  EXPECT_THROW(jl::matmul(f64({}), f64({3})), jl::ValueError);
  EXPECT_THROW(jl::matmul(f64({3}), f64({4})), jl::ValueError);
  EXPECT_THROW(jl::kernels::matmul(f64({2, 3}).value(), f64({4, 5}).value()), jl::ValueError);
}

TEST(Errors, MatmulDtypes) {
  EXPECT_THROW(jl::matmul(f64({2, 3}), f32({3, 2})), jl::TypeError);
  EXPECT_THROW(jl::matmul(i64({2, 3}), i64({3, 2})), jl::TypeError);
  EXPECT_THROW(jl::kernels::matmul(f64({2, 3}).value(), f32({3, 2}).value()), jl::TypeError);
}

TEST(Errors, ElementwiseBroadcastAndDtypes) {
  EXPECT_THROW(jl::add(f64({3}), f64({4})), jl::ValueError);
  EXPECT_THROW(jl::mul(f64({2, 3}), f64({3, 2})), jl::ValueError);
  EXPECT_THROW(jl::add(f64({3}), f32({3})), jl::TypeError);
  EXPECT_THROW(jl::tanh(i64({3})), jl::TypeError);
  EXPECT_THROW(jl::exp(Tensor()), jl::ValueError);  // undefined tensor
  EXPECT_THROW(jl::broadcast_to(f64({3}), {4}), jl::ValueError);
}

TEST(Errors, Reductions) {
  EXPECT_THROW(jl::sum(f64({2, 3}), {2}), jl::ValueError);
  EXPECT_THROW(jl::sum(f64({2, 3}), {-3}), jl::ValueError);
  EXPECT_THROW(jl::sum(f64({2, 3}), {0, -2}), jl::ValueError);  // repeated axis
  EXPECT_THROW(jl::sum(i64({2, 3})), jl::TypeError);
  EXPECT_THROW(jl::sum_to(f64({2, 3}), {4}), jl::ValueError);
}

TEST(Errors, LossWithoutClasses) {  // was an integer division by zero
  Array grad;
  EXPECT_THROW(jl::model::loss_and_grad(jl::model::Loss::CrossEntropy, f64({3, 0}).value(), f64({3, 0}).value(), grad),
               jl::ValueError);
}

TEST(Errors, Shapes) {
  EXPECT_THROW(jl::reshape(f64({2, 3}), {4}), jl::ValueError);
  EXPECT_THROW(jl::reshape(f64({2, 3}), {-1, -1}), jl::ValueError);
  EXPECT_THROW(jl::reshape(f64({2, 3}), {-1, 4}), jl::ValueError);
  EXPECT_THROW(jl::permute(f64({2, 3}), {0}), jl::ValueError);
  EXPECT_THROW(jl::permute(f64({2, 3}), {0, 0}), jl::ValueError);
  EXPECT_THROW(jl::swapaxes(f64({2, 3}), 0, 2), jl::ValueError);
  EXPECT_THROW(jl::full({1, 1, 1, 1, 1}, DType::Float64, 0), jl::ValueError);  // more than kMaxDims
  EXPECT_THROW(jl::full({2, -1}, DType::Float64, 0), jl::ValueError);
  EXPECT_THROW(f64({2}).item(), jl::ValueError);
}

TEST(Errors, Transforms) {
  TensorList p = {f64({2, 3})};
  EXPECT_THROW(jl::jvp(identity, p, {f64({3, 2})}), jl::ValueError);   // tangent shape
  EXPECT_THROW(jl::jvp(identity, p, {f32({2, 3})}), jl::ValueError);   // tangent dtype (check_like)
  EXPECT_THROW(jl::jvp(identity, p, {}), jl::ValueError);              // tangent count
  EXPECT_THROW(jl::jvp(identity, p, {Tensor()}), jl::ValueError);      // undefined tangent
  EXPECT_THROW(jl::jvp(identity, p, {jl::full({2, 3}, DType::Float64, std::numeric_limits<double>::quiet_NaN())}),
               jl::ValueError);
  EXPECT_THROW(jl::jvp(identity, {i64({2})}, {i64({2})}), jl::TypeError);  // integer primal
  EXPECT_THROW(jl::vjp(identity, {i64({2})}), jl::TypeError);
  EXPECT_THROW(jl::grad(identity, p), jl::ValueError);  // not a scalar
  EXPECT_THROW(jl::grad([](const TensorList& q) { return TensorList{jl::sum(q[0]), jl::sum(q[0])}; }, p),
               jl::ValueError);  // two outputs
  jl::VjpResult r = jl::vjp(identity, p);
  EXPECT_THROW(r.pullback({f64({3, 2})}), jl::ValueError);
  EXPECT_THROW(r.pullback({}), jl::ValueError);
  EXPECT_THROW(jl::hvp([](const TensorList& q) { return TensorList{jl::sum(q[0])}; }, p, {f64({2})}),
               jl::ValueError);
  // Errors raised inside the differentiated function propagate unchanged.
  EXPECT_THROW(jl::jvp([](const TensorList& q) { return TensorList{jl::matmul(q[0], q[0])}; }, p, {f64({2, 3})}),
               jl::ValueError);
}

TEST(Errors, MessagesNameTheProblem) {
  try {
    jl::matmul(f64({2, 3}), f64({4, 5}));
    FAIL() << "no exception";
  } catch (const jl::ValueError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("matmul"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
  }
  try {
    jl::add(f64({3}), f32({3}));
    FAIL() << "no exception";
  } catch (const jl::TypeError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("float32"), std::string::npos) << m;
  }
}
