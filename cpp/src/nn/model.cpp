// Model specs (see jaclab/model.h): each block unpacks its flat parameters and calls jaclab::nn.
#include "jaclab/model.h"

#include "jaclab/kernels.h"

namespace jaclab::model {
namespace {

const char* act_name(nn::Activation a) {
  switch (a) {
    case nn::Activation::Identity: return "identity";
    case nn::Activation::Tanh: return "tanh";
    case nn::Activation::Relu: return "relu";
    case nn::Activation::Gelu: return "gelu";
    case nn::Activation::GeluTanh: return "gelu_tanh";
    case nn::Activation::Sigmoid: return "sigmoid";
    case nn::Activation::Softplus: return "softplus";
  }
  return "?";
}

// ---- fast-path pieces (first order, plain Arrays) ----
//   linear  y = x W + b:  dx = g W^T,  dW = x^T g (rows folded),  db = sum of g over rows
Array fast_linear_forward(const Array& W, const Array& b, const Array& x, std::vector<Array>& tape) {
  if (x.ndim() < 1 || x.shape().back() != W.shape()[0])
    throw_value("linear: expected x (..., ", W.shape()[0], "), got ", shape_str(x.shape()));
  tape.push_back(x);
  return kernels::linear(x, W, b);
}
Array fast_linear_backward(const Array& W, std::vector<Array>& tape, const Array& g, Array& gW, Array& gb,
                           bool need_dx = true) {
  Array x = tape.back().contiguous();
  tape.pop_back();
  const int64_t K = W.shape()[0], N = W.shape()[1];
  Array g2 = g.contiguous().reshape_view({g.numel() / N, N});
  // gW may arrive as a view of the loop's flat gradient: the GEMM then writes straight into it.
  gW = kernels::matmul(x.reshape_view({x.numel() / K, K}).permute_view({1, 0}), g2, nullptr,
                       gW.defined() ? &gW : nullptr);
  gb = kernels::sum(g2, {0}, false);
  return need_dx ? kernels::matmul(g, W.permute_view({1, 0})) : Array();
}

bool act_has_fast(nn::Activation a) { return a != nn::Activation::GeluTanh; }
Array fast_act_forward(nn::Activation a, const Array& x, std::vector<Array>& tape) {
  using kernels::Unary;
  Array y;
  switch (a) {
    case nn::Activation::Identity: y = x; break;
    case nn::Activation::Tanh: y = kernels::unary(Unary::Tanh, x); break;
    case nn::Activation::Relu: y = kernels::unary(Unary::Relu, x); break;
    case nn::Activation::Gelu: y = kernels::unary(Unary::Gelu, x); break;
    case nn::Activation::Sigmoid: y = kernels::unary(Unary::Sigmoid, x); break;
    case nn::Activation::Softplus: y = kernels::unary(Unary::Softplus, x); break;
    case nn::Activation::GeluTanh: throw_value("gelu_tanh has no fast path");
  }
  tape.push_back(x);
  tape.push_back(y);
  return y;
}
//   dx = g act'(x):  tanh' = 1 - y^2, relu' = step(x), gelu' = Phi(x) + x phi(x), sigmoid' = y (1 - y),
//   softplus' = sigmoid(x)
Array fast_act_backward(nn::Activation a, std::vector<Array>& tape, const Array& g) {
  using kernels::Binary;
  using kernels::Unary;
  Array y = tape.back();
  tape.pop_back();
  Array x = tape.back();
  tape.pop_back();
  Array d;
  switch (a) {
    case nn::Activation::Identity: return g;
    case nn::Activation::Tanh: d = kernels::unary(Unary::OneMinusSquare, y); break;
    case nn::Activation::Relu: d = kernels::unary(Unary::Step, x); break;
    case nn::Activation::Gelu: d = kernels::unary(Unary::GeluGrad, x); break;
    case nn::Activation::Sigmoid: d = kernels::binary(Binary::Mul, y, kernels::affine(y, -1.0, 1.0)); break;
    case nn::Activation::Softplus: d = kernels::unary(Unary::Sigmoid, x); break;
    case nn::Activation::GeluTanh: throw_value("gelu_tanh has no fast path");
  }
  return kernels::binary(Binary::Mul, g, d);
}

void require_positive(const char* block, const char* what, int64_t v) {
  if (v <= 0) throw_value(block, ": ", what, " must be positive, got ", v);
}

class LinearM final : public Module {
 public:
  LinearM(int64_t i, int64_t o) : d_in_(i), d_out_(o) {}
  void param_shapes(std::vector<Shape>& out) const override {
    out.push_back({d_in_, d_out_});  // W
    out.push_back({d_out_});         // b
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override { return jaclab::linear(x, p[0], p[1]); }
  std::string describe() const override { return str_cat("Linear(", d_in_, ", ", d_out_, ")"); }
  bool has_fast_grad() const override { return true; }
  Array fast_forward(const Array* p, const Array& x, std::vector<Array>& tape) const override {
    return fast_linear_forward(p[0], p[1], x, tape);
  }
  Array fast_backward(const Array* p, std::vector<Array>& tape, const Array& g, Array* grads,
                      bool need_dx) const override {
    return fast_linear_backward(p[0], tape, g, grads[0], grads[1], need_dx);
  }

 private:
  int64_t d_in_, d_out_;
};

class MLPM final : public Module {
 public:
  MLPM(int64_t i, int64_t h, int64_t o, nn::Activation a) : d_in_(i), d_h_(h), d_out_(o), act_(a) {}
  void param_shapes(std::vector<Shape>& out) const override {
    out.push_back({d_in_, d_h_});   // W1
    out.push_back({d_h_, d_out_});  // W2
    out.push_back({d_h_});          // b1
    out.push_back({d_out_});        // b2
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override { return nn::mlp(x, p[0], p[2], p[1], p[3], act_); }
  bool has_fast_grad() const override { return act_has_fast(act_); }
  Array fast_forward(const Array* p, const Array& x, std::vector<Array>& tape) const override {
    Array h = fast_act_forward(act_, fast_linear_forward(p[0], p[2], x, tape), tape);
    return fast_linear_forward(p[1], p[3], h, tape);
  }
  Array fast_backward(const Array* p, std::vector<Array>& tape, const Array& g, Array* grads,
                      bool need_dx) const override {
    Array gh = fast_linear_backward(p[1], tape, g, grads[1], grads[3]);
    return fast_linear_backward(p[0], tape, fast_act_backward(act_, tape, gh), grads[0], grads[2], need_dx);
  }
  std::string describe() const override {
    return str_cat("MLP(", d_in_, ", ", d_h_, ", ", d_out_, ", ", act_name(act_), ")");
  }

 private:
  int64_t d_in_, d_h_, d_out_;
  nn::Activation act_;
};

class LayerNormM final : public Module {
 public:
  LayerNormM(int64_t d, double eps) : d_(d), eps_(eps) {}
  void param_shapes(std::vector<Shape>& out) const override {
    out.push_back({d_});  // b
    out.push_back({d_});  // g
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override { return jaclab::layer_norm(x, p[1], p[0], eps_); }
  std::string describe() const override { return str_cat("LayerNorm(", d_, ")"); }

 private:
  int64_t d_;
  double eps_;
};

class RMSNormM final : public Module {
 public:
  RMSNormM(int64_t d, double eps) : d_(d), eps_(eps) {}
  void param_shapes(std::vector<Shape>& out) const override { out.push_back({d_}); }  // g
  Tensor forward(const Tensor* p, const Tensor& x) const override { return jaclab::rms_norm(x, p[0], eps_); }
  std::string describe() const override { return str_cat("RMSNorm(", d_, ")"); }

 private:
  int64_t d_;
  double eps_;
};

class AttentionM final : public Module {
 public:
  AttentionM(int64_t d, int h, bool causal) : d_(d), heads_(h), causal_(causal) {}
  void param_shapes(std::vector<Shape>& out) const override {
    for (int i = 0; i < 4; ++i) out.push_back({d_, d_});  // Wk, Wo, Wq, Wv
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override {
    return nn::multi_head_attention(x, p[2], p[0], p[3], p[1], heads_, causal_);
  }
  std::string describe() const override {
    return str_cat("Attention(", d_, ", heads=", heads_, causal_ ? ", causal" : "", ")");
  }

 private:
  int64_t d_;
  int heads_;
  bool causal_;
};

class TransformerM final : public Module {
 public:
  TransformerM(int64_t d, int h, int64_t dh, bool causal, nn::Norm norm, double s, nn::Activation a)
      : d_(d), heads_(h), d_hidden_(dh), causal_(causal), norm_(norm), scale_(s), act_(a) {}
  int norm_count() const { return norm_ == nn::Norm::Layer ? 2 : norm_ == nn::Norm::RMS ? 1 : 0; }
  void param_shapes(std::vector<Shape>& out) const override {
    for (int i = 0; i < 4; ++i) out.push_back({d_, d_});  // attn: Wk, Wo, Wq, Wv
    out.push_back({d_, d_hidden_});                      // mlp: W1
    out.push_back({d_hidden_, d_});                      //      W2
    out.push_back({d_hidden_});                          //      b1
    out.push_back({d_});                                 //      b2
    for (int i = 0; i < 2 * norm_count(); ++i) out.push_back({d_});  // norm1 (b, g | g), norm2
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override {
    nn::TransformerParams tp;
    tp.Wk = p[0], tp.Wo = p[1], tp.Wq = p[2], tp.Wv = p[3];
    tp.W1 = p[4], tp.W2 = p[5], tp.b1 = p[6], tp.b2 = p[7];
    const Tensor* n1 = p + 8;
    const Tensor* n2 = n1 + norm_count();
    if (norm_ == nn::Norm::Layer) {
      tp.norm1_b = n1[0], tp.norm1_g = n1[1], tp.norm2_b = n2[0], tp.norm2_g = n2[1];
    } else if (norm_ == nn::Norm::RMS) {
      tp.norm1_g = n1[0], tp.norm2_g = n2[0];
    }
    return nn::transformer_block(x, tp, heads_, causal_, norm_, scale_, act_);
  }
  std::string describe() const override {
    const char* nn = norm_ == nn::Norm::Layer ? "layer" : norm_ == nn::Norm::RMS ? "rms" : "none";
    return str_cat("TransformerBlock(", d_, ", heads=", heads_, ", hidden=", d_hidden_, ", norm=", nn, ")");
  }

 private:
  int64_t d_;
  int heads_;
  int64_t d_hidden_;
  bool causal_;
  nn::Norm norm_;
  double scale_;
  nn::Activation act_;
};

class ResidualM final : public Module {
 public:
  ResidualM(ModulePtr b, double s) : block_(std::move(b)), scale_(s) {}
  void param_shapes(std::vector<Shape>& out) const override { block_->param_shapes(out); }
  Tensor forward(const Tensor* p, const Tensor& x) const override {
    return residual(x, block_->forward(p, x), scale_);
  }
  std::string describe() const override { return str_cat("Residual(", block_->describe(), ", scale=", scale_, ")"); }
  bool has_fast_grad() const override { return block_->has_fast_grad(); }
  // y = x + s f(x):  dx = g + J_f^T (s g),  dparams = J_p^T (s g)
  Array fast_forward(const Array* p, const Array& x, std::vector<Array>& tape) const override {
    Array y = block_->fast_forward(p, x, tape);
    return scale_ == 1.0 ? kernels::binary(kernels::Binary::Add, x, y) : kernels::add_scaled(x, y, scale_);
  }
  Array fast_backward(const Array* p, std::vector<Array>& tape, const Array& g, Array* grads,
                      bool need_dx) const override {
    Array gx = block_->fast_backward(p, tape, scale_ == 1.0 ? g : kernels::affine(g, scale_, 0.0), grads, need_dx);
    return need_dx ? kernels::binary(kernels::Binary::Add, g, gx) : Array();
  }

 private:
  ModulePtr block_;
  double scale_;
};

class SequentialM final : public Module {
 public:
  explicit SequentialM(std::vector<ModulePtr> layers) : layers_(std::move(layers)) {
    for (auto& l : layers_) counts_.push_back(l->num_params());
  }
  void param_shapes(std::vector<Shape>& out) const override {
    for (auto& l : layers_) l->param_shapes(out);
  }
  Tensor forward(const Tensor* p, const Tensor& x) const override {
    Tensor h = x;
    for (size_t i = 0; i < layers_.size(); ++i) {
      h = layers_[i]->forward(p, h);
      p += counts_[i];
    }
    return h;
  }
  bool has_fast_grad() const override {
    for (auto& l : layers_)
      if (!l->has_fast_grad()) return false;
    return true;
  }
  Array fast_forward(const Array* p, const Array& x, std::vector<Array>& tape) const override {
    Array h = x;
    for (size_t i = 0; i < layers_.size(); ++i) {
      h = layers_[i]->fast_forward(p, h, tape);
      p += counts_[i];
    }
    return h;
  }
  Array fast_backward(const Array* p, std::vector<Array>& tape, const Array& g, Array* grads,
                      bool need_dx) const override {
    size_t off = 0;
    for (auto c : counts_) off += c;
    Array gh = g;
    for (size_t i = layers_.size(); i-- > 0;) {
      off -= counts_[i];
      gh = layers_[i]->fast_backward(p + off, tape, gh, grads + off, i > 0 || need_dx);
    }
    return gh;
  }
  std::string describe() const override {
    std::string s = "Sequential(";
    for (size_t i = 0; i < layers_.size(); ++i) s += (i ? ", " : "") + layers_[i]->describe();
    return s + ")";
  }

 private:
  std::vector<ModulePtr> layers_;
  std::vector<size_t> counts_;
};

class ActivationM final : public Module {
 public:
  explicit ActivationM(nn::Activation a) : act_(a) {}
  void param_shapes(std::vector<Shape>&) const override {}
  Tensor forward(const Tensor*, const Tensor& x) const override { return nn::activate(x, act_); }
  bool has_fast_grad() const override { return act_has_fast(act_); }
  Array fast_forward(const Array*, const Array& x, std::vector<Array>& tape) const override {
    return fast_act_forward(act_, x, tape);
  }
  Array fast_backward(const Array*, std::vector<Array>& tape, const Array& g, Array*, bool need_dx) const override {
    Array gx = fast_act_backward(act_, tape, g);  // pops the tape either way
    return need_dx ? gx : Array();
  }
  std::string describe() const override { return act_name(act_); }

 private:
  nn::Activation act_;
};

// x (B, T, d) -> x[:, -1, :] written with differentiable ops: (B, d, T) @ e_T -> (B, d).
class LastTokenM final : public Module {
 public:
  void param_shapes(std::vector<Shape>&) const override {}
  Tensor forward(const Tensor*, const Tensor& x) const override {
    if (x.ndim() != 3) throw_value("LastToken: input must be (B, T, d), got ", shape_str(x.shape()));
    const int64_t B = x.shape()[0], T = x.shape()[1], d = x.shape()[2];
    Array e = Array::zeros({T, 1}, x.dtype());
    if (x.dtype() == DType::Float32) e.data<float>()[T - 1] = 1.0f;
    else e.data<double>()[T - 1] = 1.0;
    return reshape(matmul(swapaxes(x, 1, 2), Tensor(e)), {B, d});
  }
  std::string describe() const override { return "LastToken"; }
};

}  // namespace

Array Module::fast_forward(const Array*, const Array&, std::vector<Array>&) const {
  throw_value(describe(), " has no fast gradient path");
}
Array Module::fast_backward(const Array*, std::vector<Array>&, const Array&, Array*, bool) const {
  throw_value(describe(), " has no fast gradient path");
}

size_t Module::num_params() const {
  std::vector<Shape> s;
  param_shapes(s);
  return s.size();
}

std::vector<Shape> Module::param_shapes() const {
  std::vector<Shape> s;
  param_shapes(s);
  return s;
}

void Module::check_params(const std::vector<Shape>& given) const {
  std::vector<Shape> want = param_shapes();
  if (given.size() != want.size())
    throw_value(describe(), ": expected ", want.size(), " parameter arrays (flat, in jl.tree_flatten order), got ",
                given.size());
  for (size_t i = 0; i < want.size(); ++i)
    if (given[i] != want[i])
      throw_value(describe(), ": flat parameter ", i, " must have shape ", shape_str(want[i]), ", got ",
                  shape_str(given[i]));
}

Tensor Module::apply(const std::vector<Tensor>& flat, const Tensor& x) const {
  std::vector<Shape> shapes;
  for (auto& t : flat) {
    if (!t.defined()) throw_value(describe(), ": a parameter is undefined");
    shapes.push_back(t.shape());
  }
  check_params(shapes);
  return forward(flat.data(), x);
}

ModulePtr linear(int64_t d_in, int64_t d_out) {
  require_positive("Linear", "d_in", d_in);
  require_positive("Linear", "d_out", d_out);
  return std::make_shared<LinearM>(d_in, d_out);
}
ModulePtr mlp(int64_t d_in, int64_t d_hidden, int64_t d_out, nn::Activation act) {
  require_positive("MLP", "d_in", d_in);
  require_positive("MLP", "d_hidden", d_hidden);
  require_positive("MLP", "d_out", d_out);
  return std::make_shared<MLPM>(d_in, d_hidden, d_out, act);
}
ModulePtr layer_norm(int64_t d, double eps) { return std::make_shared<LayerNormM>(d, eps); }
ModulePtr rms_norm(int64_t d, double eps) { return std::make_shared<RMSNormM>(d, eps); }
ModulePtr attention(int64_t d_model, int n_heads, bool causal) {
  if (n_heads <= 0 || d_model % n_heads) throw_value("Attention: n_heads=", n_heads, " does not divide d_model=", d_model);
  return std::make_shared<AttentionM>(d_model, n_heads, causal);
}
ModulePtr transformer_block(int64_t d_model, int n_heads, int64_t d_hidden, bool causal, nn::Norm norm, double s,
                            nn::Activation act) {
  if (n_heads <= 0 || d_model % n_heads)
    throw_value("TransformerBlock: n_heads=", n_heads, " does not divide d_model=", d_model);
  require_positive("TransformerBlock", "d_hidden", d_hidden);
  return std::make_shared<TransformerM>(d_model, n_heads, d_hidden, causal, norm, s, act);
}
ModulePtr residual(ModulePtr block, double s) {
  if (!block) throw_value("Residual: block is missing");
  return std::make_shared<ResidualM>(std::move(block), s);
}
ModulePtr sequential(std::vector<ModulePtr> layers) {
  if (layers.empty()) throw_value("Sequential needs at least one layer");
  for (auto& l : layers)
    if (!l) throw_value("Sequential: a layer is missing");
  return std::make_shared<SequentialM>(std::move(layers));
}
ModulePtr activation(nn::Activation act) { return std::make_shared<ActivationM>(act); }
ModulePtr last_token() { return std::make_shared<LastTokenM>(); }

// ---- losses ---------------------------------------------------------------------------------
Loss loss_from_name(const std::string& n) {
  if (n == "mse") return Loss::MSE;
  if (n == "cross_entropy") return Loss::CrossEntropy;
  throw_value("unknown loss '", n, "' (expected 'mse' or 'cross_entropy')");
}
const char* loss_name(Loss l) { return l == Loss::MSE ? "mse" : "cross_entropy"; }

Tensor loss(Loss kind, const Tensor& pred, const Tensor& target) {
  if (kind == Loss::MSE) return mse(pred, target);
  if (pred.ndim() > 2) {
    const int64_t C = pred.shape().back();
    Tensor labels = target.dtype() == DType::Int64 ? reshape(target, {-1}) : reshape(target, {-1, C});
    return cross_entropy(reshape(pred, {-1, C}), labels);
  }
  return cross_entropy(pred, target);
}

// mse = mean((p - t)^2):                d/dp = (2 / n) (p - t)
// cross_entropy = -(1/B) sum t log_softmax(z):  d/dz = (-t/B) - softmax(z) sum_c(-t/B)   (the engine's order)
namespace {
double sum_all(const Array& a) {
  std::vector<int> axes(a.ndim());
  for (int i = 0; i < a.ndim(); ++i) axes[i] = i;
  return kernels::sum(a, axes, false).item();
}
}  // namespace

double loss_and_grad(Loss kind, const Array& pred, const Array& target, Array& grad) {
  using kernels::Binary;
  using kernels::Unary;
  if (kind == Loss::MSE) {
    if (pred.shape() != target.shape())
      throw_value("mse: pred has shape ", shape_str(pred.shape()), " but target has shape ", shape_str(target.shape()));
    Array d = kernels::binary(Binary::Sub, pred, target);
    const double n = static_cast<double>(d.numel());
    grad = kernels::affine(d, 2.0 / n, 0.0);
    return sum_all(kernels::unary(Unary::Square, d)) / n;
  }
  if (pred.ndim() == 0 || pred.shape().back() == 0)
    throw_value("cross_entropy: logits need a last (class) axis of size >= 1, got shape ", shape_str(pred.shape()));
  const int64_t C = pred.shape().back(), B = pred.numel() / C;
  Array z = pred.contiguous().reshape_view({B, C});
  Array t;
  if (target.dtype() == DType::Int64) {
    if (target.numel() != B) throw_value("cross_entropy: expected ", B, " labels, got shape ", shape_str(target.shape()));
    t = kernels::one_hot(target.contiguous().reshape_view({B}), C, pred.dtype());
  } else {
    if (target.numel() != B * C)
      throw_value("cross_entropy: probability targets must have the logits' shape ", shape_str(pred.shape()));
    t = target.contiguous().reshape_view({B, C});
  }
  Array ls = kernels::log_softmax(z, 1);
  const double inv_b = 1.0 / static_cast<double>(B);  // an empty batch: NaN, as cross_entropy()
  Array gt = kernels::affine(t, -inv_b, 0.0);
  Array p = kernels::unary(Unary::Exp, ls);
  Array s = kernels::sum(gt, {1}, true);
  grad = kernels::binary(Binary::Sub, gt, kernels::binary(Binary::Mul, p, s)).reshape_view(pred.shape());
  return -inv_b * sum_all(kernels::binary(Binary::Mul, t, ls));
}

}  // namespace jaclab::model
