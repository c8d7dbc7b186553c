// Blocks, composed from the fused primitives (linear, layer_norm, attention) and activations.
#include "jaclab/nn.h"

namespace jaclab::nn {
namespace {

void expect_shape(const char* block, const char* name, const Tensor& p, const Shape& want) {
  if (!p.defined()) throw_value(block, ": parameter ", name, " is missing");
  if (p.shape() != want)
    throw_value(block, ": parameter ", name, " must have shape ", shape_str(want), ", got ", shape_str(p.shape()));
}

Tensor apply_norm(const Tensor& x, Norm norm, const Tensor& g, const Tensor& b, const char* which) {
  const int64_t d = x.shape().back();
  switch (norm) {
    case Norm::None: return x;
    case Norm::Layer:
      expect_shape("TransformerBlock", which, g, {d});
      expect_shape("TransformerBlock", which, b, {d});
      return layer_norm(x, g, b, 1e-5);
    case Norm::RMS:
      expect_shape("TransformerBlock", which, g, {d});
      return rms_norm(x, g, 1e-6);
  }
  return x;
}

}  // namespace

Activation activation_from_name(const std::string& n) {
  if (n == "tanh") return Activation::Tanh;
  if (n == "relu") return Activation::Relu;
  if (n == "gelu") return Activation::Gelu;
  if (n == "gelu_tanh") return Activation::GeluTanh;
  if (n == "sigmoid") return Activation::Sigmoid;
  if (n == "softplus") return Activation::Softplus;
  if (n == "identity" || n == "linear") return Activation::Identity;
  throw_value("unknown activation '", n, "' (expected tanh, relu, gelu, gelu_tanh, sigmoid, softplus, identity)");
}

Tensor activate(const Tensor& x, Activation a) {
  switch (a) {
    case Activation::Identity: return x;
    case Activation::Tanh: return tanh(x);
    case Activation::Relu: return relu(x);
    case Activation::Gelu: return gelu(x);
    case Activation::GeluTanh: return gelu_tanh(x);
    case Activation::Sigmoid: return sigmoid(x);
    case Activation::Softplus: return softplus(x);
  }
  return x;
}

Norm norm_from_name(const std::string& n) {
  if (n == "layer") return Norm::Layer;
  if (n == "rms") return Norm::RMS;
  if (n == "none" || n.empty()) return Norm::None;
  throw_value("unknown norm '", n, "' (expected 'layer', 'rms' or None)");
}

Tensor mlp(const Tensor& x, const Tensor& W1, const Tensor& b1, const Tensor& W2, const Tensor& b2, Activation act) {
  if (!x.defined() || x.ndim() < 1) throw_value("MLP: input must be at least 1-d");
  for (auto [name, p] : {std::pair{"W1", &W1}, {"b1", &b1}, {"W2", &W2}, {"b2", &b2}})
    if (!p->defined()) throw_value("MLP: parameter ", name, " is missing");
  const bool ok = W1.ndim() == 2 && W2.ndim() == 2 && b1.ndim() == 1 && b2.ndim() == 1 &&
                  b1.shape()[0] == W1.shape()[1] && W2.shape()[0] == W1.shape()[1] && b2.shape()[0] == W2.shape()[1];
  if (!ok)
    throw_value("MLP: parameters must be W1 (d_in, d_hidden), b1 (d_hidden,), W2 (d_hidden, d_out), b2 (d_out,); got W1 ",
                shape_str(W1.shape()), ", b1 ", shape_str(b1.shape()), ", W2 ", shape_str(W2.shape()), ", b2 ",
                shape_str(b2.shape()));
  if (x.shape().back() != W1.shape()[0])
    throw_value("MLP: input has last dim ", x.shape().back(), " (shape ", shape_str(x.shape()), ") but W1 is ",
                shape_str(W1.shape()));
  return linear(activate(linear(x, W1, b1), act), W2, b2);
}

Tensor multi_head_attention(const Tensor& x, const Tensor& Wq, const Tensor& Wk, const Tensor& Wv, const Tensor& Wo,
                            int n_heads, bool causal) {
  if (!x.defined() || x.ndim() != 3)
    throw_value("Attention: input must be (B, T, d_model), got ", x.defined() ? shape_str(x.shape()) : "nothing");
  const int64_t B = x.shape()[0], T = x.shape()[1], d = x.shape()[2];
  if (Wq.defined() && Wq.ndim() == 2 && Wq.shape()[0] != d)
    throw_value("Attention: input has d_model=", d, " (shape ", shape_str(x.shape()), ") but Wq is ",
                shape_str(Wq.shape()));
  if (n_heads <= 0 || d % n_heads != 0)
    throw_value("Attention: n_heads=", n_heads, " does not divide d_model=", d);
  for (auto [name, W] : {std::pair{"Wq", &Wq}, {"Wk", &Wk}, {"Wv", &Wv}, {"Wo", &Wo}})
    expect_shape("Attention", name, *W, {d, d});
  const int64_t dh = d / n_heads;
  // (B, T, d) -> (B, H, T, dh): head h takes columns h*dh .. (h+1)*dh.
  auto split = [&](const Tensor& y) { return permute(reshape(y, {B, T, n_heads, dh}), {0, 2, 1, 3}); };
  Tensor o = attention(split(matmul(x, Wq)), split(matmul(x, Wk)), split(matmul(x, Wv)), causal);
  return matmul(reshape(permute(o, {0, 2, 1, 3}), {B, T, d}), Wo);
}

Tensor transformer_block(const Tensor& x, const TransformerParams& p, int n_heads, bool causal, Norm norm,
                         double s, Activation act) {
  Tensor a = multi_head_attention(apply_norm(x, norm, p.norm1_g, p.norm1_b, "norm1"), p.Wq, p.Wk, p.Wv, p.Wo,
                                  n_heads, causal);
  Tensor h = residual(x, a, s);
  Tensor m = mlp(apply_norm(h, norm, p.norm2_g, p.norm2_b, "norm2"), p.W1, p.b1, p.W2, p.b2, act);
  return residual(h, m, s);
}

}  // namespace jaclab::nn
