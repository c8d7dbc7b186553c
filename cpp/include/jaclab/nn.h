// Blocks: MLP, multi-head attention, residual, transformer block. Conventions are fixed so
// results can be checked against any framework (see docs/nn.md):
//   Linear         y = x W + b,                W (d_in, d_out), b (d_out,)
//   MLP            y = act(x W1 + b1) W2 + b2
//   Attention      x (B, T, d); q = x Wq, k = x Wk, v = x Wv, each (d, d); heads split the last
//                  axis in order (head h = columns h*dh .. (h+1)*dh); softmax(q k^T / sqrt(dh) [+
//                  causal mask]) v per head; heads merged back in order; output @ Wo
//   TransformerBlock (pre-norm)  h = x + s Attn(N1(x));  y = h + s MLP(N2(h))
// Parameters are passed explicitly; every function checks their shapes and names the block.
#pragma once
#include <string>

#include "jaclab/ops.h"

namespace jaclab::nn {

enum class Activation { Identity, Tanh, Relu, Gelu, GeluTanh, Sigmoid, Softplus };
Activation activation_from_name(const std::string& name);  // "tanh", "relu", "gelu", "gelu_tanh", ...
Tensor activate(const Tensor& x, Activation a);

enum class Norm { None, Layer, RMS };
Norm norm_from_name(const std::string& name);  // "layer", "rms", "none"

Tensor mlp(const Tensor& x, const Tensor& W1, const Tensor& b1, const Tensor& W2, const Tensor& b2, Activation act);

Tensor multi_head_attention(const Tensor& x, const Tensor& Wq, const Tensor& Wk, const Tensor& Wv, const Tensor& Wo,
                            int n_heads, bool causal);

struct TransformerParams {
  Tensor norm1_g, norm1_b, norm2_g, norm2_b;  // undefined when unused (norm None, or RMS bias)
  Tensor Wq, Wk, Wv, Wo;
  Tensor W1, b1, W2, b2;
};
Tensor transformer_block(const Tensor& x, const TransformerParams& p, int n_heads, bool causal, Norm norm,
                         double scale, Activation act);

}  // namespace jaclab::nn
