// Autograd: how a primitive op becomes differentiable.
//
// Every primitive is written once, with `make_op(name, inputs, value, jvp_rule, vjp_rule)`:
//   value    - the forward result, computed by a kernel on plain Arrays;
//   jvp_rule - (JvpContext) -> output tangent, written in jaclab ops;
//   vjp_rule - (VjpContext) -> one cotangent per input, written in jaclab ops.
// Because both rules are jaclab ops, they are themselves recorded/differentiated when needed:
// that is what gives forward-over-reverse, reverse-over-forward and reverse-over-reverse.
//
// Reverse mode: a Node is recorded when grad mode is on and an input has a grad_fn. Nodes hold
// their inputs (upstream references only, so the graph has no cycles) and the raw output value.
// Forward mode: tangents are carried on tensors, per jvp level; the jvp rule runs for every level
// present on the inputs, with the primals stripped of that level and the inner ones.
// Broadcasting is undone in one place: a cotangent whose shape differs from its input's is
// summed back (sum_to), and a tangent whose shape differs from the output's is broadcast.
#pragma once
#include <functional>
#include <initializer_list>
#include <vector>

#include "jaclab/tensor.h"

namespace jaclab {

// Shapes and permutations for a batch of K directions carried on a leading axis (K = 0: none).
Shape batched_shape(int64_t K, const Shape& s);                     // (K, *s), or s
std::vector<int> batched_perm(int64_t K, const std::vector<int>& perm);  // (0, perm + 1), or perm

struct VjpContext {
  const std::vector<Tensor>& inputs;  // the op's inputs, as saved at forward time
  const Tensor& g;                    // cotangent of the output: (K, *out.shape) in a batched sweep
  const Array& out_value;             // raw output value
  const Tensor& saved_out;            // the output tensor itself while it is alive (else undefined)
  const std::vector<bool>& needs;     // needs[i]: input i wants a cotangent
  bool differentiable;                // rules must build a differentiable result
  int64_t batch = 0;                  // K cotangents at once (leading axis), 0 when unbatched
  // tangent_only[i]: input i's cotangent is a final result of which the caller reads only the
  // tangent (jl.hvp). A rule may then skip its value (see matmul_tangent_only); null: none is.
  const std::vector<bool>* tangent_only = nullptr;
  const Tensor& in(size_t i) const { return inputs[i]; }
  bool only_tangent(size_t i) const { return tangent_only && (*tangent_only)[i]; }
  Shape tshape(const Shape& s) const { return batched_shape(batch, s); }
  std::vector<int> tperm(const std::vector<int>& perm) const { return batched_perm(batch, perm); }
  // The output as a tensor. When the result must be differentiable (second order), the output
  // must carry its graph and tangents: that is the forward's own output tensor while something
  // still holds it (usually its consumer's node does), else it is recomputed from the inputs by
  // `recompute` (the same op on the same inputs, so the same tangents and derivatives). At first
  // order the saved value is used as a constant.
  template <class F>
  Tensor out(F&& recompute) const {
    if (!differentiable) return Tensor(out_value);
    return saved_out.defined() ? saved_out : recompute();
  }
};

// Batched levels: a jvp level may carry K tangent directions at once. Its tangents then have a
// leading axis, (K, *primal.shape). Elementwise and matmul rules need no change (broadcasting
// aligns the trailing axes: make_op pads a multi-input op's tangents to (K, 1, .., *shape));
// rules that pass a primal's shape, axes or permutation on to an op on the tangent use
// tshape()/tperm()/negative axes so that they work either way.
struct JvpContext {
  const std::vector<Tensor>& primals;   // inputs, stripped of this level's tangents
  const std::vector<Tensor>& tangents;  // tangents at this level (undefined = zero)
  const Tensor& out;                    // output, stripped likewise (differentiable)
  int64_t batch = 0;                    // K directions at this level, 0 when unbatched
  const Tensor& in(size_t i) const { return primals[i]; }
  const Tensor& t(size_t i) const { return tangents[i]; }
  Shape tshape(const Shape& s) const { return batched_shape(batch, s); }
  std::vector<int> tperm(const std::vector<int>& perm) const { return batched_perm(batch, perm); }
};

using VjpRule = std::function<std::vector<Tensor>(const VjpContext&)>;
using JvpRule = std::function<Tensor(const JvpContext&)>;

struct Node {
  const char* name;
  uint64_t seq;  // creation order: consumers always have a larger seq than producers
  std::vector<Tensor> inputs;
  Array out_value;
  std::weak_ptr<TensorImpl> out;  // the output tensor; weak, since it owns this node (no cycle)
  VjpRule vjp;
};

bool grad_mode();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
 private:
  bool prev_;
};

Tensor make_op(const char* name, std::vector<Tensor> inputs, Array value, const JvpRule& jvp, VjpRule vjp);

// Reverse-mode sweep: d(sum_k <cotangents[k], outputs[k]>)/d(inputs[i]). Every input must have a
// grad_fn (see `watch`); propagation stops at the inputs. Unreached inputs get zeros.
// With create_graph the sweep itself is recorded, so its results can be differentiated again.
// With batch = K > 0 every cotangent carries K directions on a leading axis, (K, *output.shape),
// and so do the results; first order only (create_graph must be false).
// With tangents_only (and no create_graph) the caller reads only the results' forward-mode
// tangents, not their values (an HVP: the jvp of a gradient). Rules may then return a zero
// placeholder value for a result, carrying the right tangent, and skip the work of the value.
std::vector<Tensor> backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& cotangents,
                             const std::vector<Tensor>& inputs, bool create_graph, int64_t batch = 0,
                             bool tangents_only = false);

// Reduce a batch of K cotangents (K, *s') to (K, *shape), where `shape` broadcasts to s'
// (the batched form of sum_to; K = 0 is plain sum_to).
Tensor sum_to_batched(const Tensor& g, const Shape& shape, int64_t K);

// An alias of x with a fresh identity node: the point a reverse sweep differentiates with respect to.
Tensor watch(const Tensor& x);

// True when nothing computed from `ts` (undefined ones are skipped) is recorded or carries
// tangents: none carries tangents, and none requires grad while grad mode is on. A rule may then
// work on their values with a fused first-order kernel.
bool all_constant(std::initializer_list<Tensor> ts);

// Levels and tracing depth used by the transforms.
int new_jvp_level(int64_t batch = 0);  // batch: K directions carried at once (0 = plain)
void end_jvp_level(int level);
int64_t jvp_level_batch(int level);
// Whether a reverse trace was running when the level opened (reverse-over-forward): only then are
// the level's tangent computations recorded for reverse mode.
bool jvp_level_under_reverse(int level);
int& reverse_trace_depth();

}  // namespace jaclab
