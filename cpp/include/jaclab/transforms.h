// Function transforms over flat lists of tensors (the Python layer adds pytrees on top).
//   jvp(f, x, t)      -> f(x) and J_f(x) t                 (forward mode)
//   vjp(f, x)         -> f(x) and u -> J_f(x)^T u          (reverse mode, graph kept for reuse)
//   grad(f, x)        -> d f / d x for a scalar f
//   hvp(f, x, v)      -> H_f(x) v = jvp(grad f, x, v)      (forward-over-reverse)
// All compose: a transform evaluated inside another one's function is differentiated by it.
#pragma once
#include <functional>
#include <vector>

#include "jaclab/tensor.h"

namespace jaclab {

using TensorList = std::vector<Tensor>;
using Fn = std::function<TensorList(const TensorList&)>;

struct JvpResult {
  TensorList out;
  TensorList tangents;
};
JvpResult jvp(const Fn& f, const TensorList& primals, const TensorList& tangents);
// K directions at once: tangents[i] has shape (K, *primals[i].shape); the result's tangents
// have shape (K, *out.shape). One pass instead of K; memory grows with K.
JvpResult jvp_batched(const Fn& f, const TensorList& primals, const TensorList& tangents, int64_t K);

// The pullback returned by vjp; may be called any number of times.
class VjpFunction {
 public:
  VjpFunction(TensorList outputs, TensorList inputs) : outputs_(std::move(outputs)), inputs_(std::move(inputs)) {}
  TensorList operator()(const TensorList& cotangents) const;
  // K cotangents per output at once, (K, *out.shape): one reverse sweep instead of K; the
  // results are (K, *in.shape). First order.
  TensorList batched(const TensorList& cotangents, int64_t K) const;
  // For a caller that reads only the results' forward-mode tangents (an HVP, the jvp of this
  // pullback): the results' values may be zero placeholders. See jaclab::backward.
  TensorList tangents_only(const TensorList& cotangents) const;
  size_t num_outputs() const { return outputs_.size(); }

 private:
  TensorList outputs_, inputs_;
};

struct VjpResult {
  TensorList out;
  VjpFunction pullback;
};
VjpResult vjp(const Fn& f, const TensorList& primals);

struct ValueAndGrad {
  Tensor value;
  TensorList grads;
};
ValueAndGrad value_and_grad(const Fn& f, const TensorList& primals);  // f must return one scalar
TensorList grad(const Fn& f, const TensorList& primals);
TensorList hvp(const Fn& f, const TensorList& primals, const TensorList& tangents);

// Checks that `given` matches `expected` element by element (shape, dtype); throws ValueError
// naming `what` (e.g. "tangent") and the position.
void check_like(const TensorList& expected, const TensorList& given, const char* what);

}  // namespace jaclab
