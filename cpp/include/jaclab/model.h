// Model specs: the jl.nn blocks as a small C++ module tree, so that a training loop can evaluate a
// model and its loss with no Python in the loop.
//
// A Module knows its hyper-parameters (sizes, activation, heads, ...) but holds no parameters:
// parameters are passed in as ONE FLAT LIST, in the order of jl.tree_flatten(params) on the
// Python side, i.e. depth first with dict keys sorted (ASCII: upper case before lower case):
//   Linear            W, b
//   MLP               W1, W2, b1, b2
//   LayerNorm         b, g          RMSNorm  g
//   Attention         Wk, Wo, Wq, Wv
//   TransformerBlock  attn (Wk, Wo, Wq, Wv), mlp (W1, W2, b1, b2), norm1 (as its norm), norm2
//   Residual          the block's;  Sequential  each layer's in turn;  activations, LastToken: none
// `apply` calls the same jaclab::nn / ops functions as the Python blocks, so both give the same
// numbers; it is differentiable like any jaclab function.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "jaclab/nn.h"

namespace jaclab::model {

class Module {
 public:
  virtual ~Module() = default;
  // Expected parameter shapes, in flat order (appended to `out`).
  virtual void param_shapes(std::vector<Shape>& out) const = 0;
  // y = block(x) with parameters params[0 .. num_params()).
  virtual Tensor forward(const Tensor* params, const Tensor& x) const = 0;
  virtual std::string describe() const = 0;  // e.g. "MLP(16, 32, 10, tanh)"

  size_t num_params() const;
  std::vector<Shape> param_shapes() const;
  // Checks the number and shapes of `flat_params` (ValueError naming the parameter) and applies.
  Tensor apply(const std::vector<Tensor>& flat_params, const Tensor& x) const;
  void check_params(const std::vector<Shape>& shapes) const;  // same check, on shapes only

  // ---- first-order fast path (optional) ----
  // Forward on plain Arrays that pushes what the backward pass needs onto `tape`, and a backward
  // pass that pops it: no autograd graph, for the training loop's plain gradients (the graph's
  // bookkeeping dominates small models). Blocks without it (attention, norms, transformer) make
  // the loop use the autograd engine for the whole model. The results equal the engine's to
  // rounding (tests/test_optim.py).
  virtual bool has_fast_grad() const { return false; }
  virtual Array fast_forward(const Array* params, const Array& x, std::vector<Array>& tape) const;
  // Given gy = dL/dy, writes dL/dparams[i] into grads[i] and returns dL/dx (an empty Array when
  // need_dx is false: the first layer's input gradient is a whole GEMM nobody uses).
  virtual Array fast_backward(const Array* params, std::vector<Array>& tape, const Array& gy, Array* grads,
                              bool need_dx = true) const;
};
using ModulePtr = std::shared_ptr<const Module>;

ModulePtr linear(int64_t d_in, int64_t d_out);
ModulePtr mlp(int64_t d_in, int64_t d_hidden, int64_t d_out, nn::Activation act);
ModulePtr layer_norm(int64_t d, double eps = 1e-5);
ModulePtr rms_norm(int64_t d, double eps = 1e-6);
ModulePtr attention(int64_t d_model, int n_heads, bool causal);
ModulePtr transformer_block(int64_t d_model, int n_heads, int64_t d_hidden, bool causal, nn::Norm norm, double scale,
                            nn::Activation act);
ModulePtr residual(ModulePtr block, double scale = 1.0);
ModulePtr sequential(std::vector<ModulePtr> layers);
ModulePtr activation(nn::Activation act);
// (B, T, d) -> (B, d): the last position of a sequence (readout for sequence models).
ModulePtr last_token();

// ---- losses ---------------------------------------------------------------------------------
//   mse            mean((pred - target)^2) over all elements
//   cross_entropy  mean over rows of -log softmax(logits)[label]; logits (..., C) are flattened
//                  to rows (N, C) and int64 labels (...) to (N,)
enum class Loss { MSE, CrossEntropy };
Loss loss_from_name(const std::string& name);  // "mse" | "cross_entropy"
const char* loss_name(Loss loss);
Tensor loss(Loss kind, const Tensor& pred, const Tensor& target);
// The loss and its gradient with respect to pred, on plain Arrays (the fast path's last step).
double loss_and_grad(Loss kind, const Array& pred, const Array& target, Array& grad_pred);

}  // namespace jaclab::model
