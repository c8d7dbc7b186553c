#include "jaclab/autograd.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "jaclab/ops.h"

namespace jaclab {

// ---- Tensor ---------------------------------------------------------------------------------
Tensor::Tensor(Array value) : impl_(std::make_shared<TensorImpl>()) { impl_->value = std::move(value); }

Tensor Tensor::tangent(int level) const {
  for (auto& [l, t] : impl_->tangents)
    if (l == level) return t;
  return Tensor();
}

Tensor Tensor::with_tangent(int level, const Tensor& t) const {
  Tensor r;
  r.impl_ = std::make_shared<TensorImpl>(*impl_);
  auto& ts = r.impl_->tangents;
  ts.erase(std::remove_if(ts.begin(), ts.end(), [&](auto& p) { return p.first == level; }), ts.end());
  if (t.defined()) {
    ts.emplace_back(level, t);
    std::sort(ts.begin(), ts.end(), [](auto& a, auto& b) { return a.first < b.first; });
  }
  return r;
}

Tensor Tensor::strip_levels_from(int level) const {
  if (max_level() < level) return *this;
  return alias_below(level);
}

Tensor Tensor::alias_below(int level) const {
  Tensor r;
  r.impl_ = std::make_shared<TensorImpl>();
  r.impl_->value = impl_->value;
  r.impl_->grad_fn = impl_->grad_fn;
  for (auto& p : impl_->tangents)
    if (p.first < level) r.impl_->tangents.push_back(p);
  return r;
}

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return str_cat(dtype_name(t.dtype()), " tensor of shape ", shape_str(t.shape()));
}

// ---- modes ----------------------------------------------------------------------------------
namespace {
thread_local bool t_grad_mode = true;
thread_local int t_reverse_depth = 0;
std::atomic<uint64_t> g_seq{0};
std::atomic<int> g_level{0};
}  // namespace

bool grad_mode() { return t_grad_mode; }
GradModeGuard::GradModeGuard(bool enabled) : prev_(t_grad_mode) { t_grad_mode = enabled; }
GradModeGuard::~GradModeGuard() { t_grad_mode = prev_; }
namespace {
// What make_op needs to know of a jvp level; only levels with something to say are listed.
struct LevelInfo {
  int64_t batch = 0;           // K directions carried at once (0: plain)
  bool under_reverse = false;  // opened inside a reverse trace
};
std::mutex g_levels_mutex;
std::unordered_map<int, LevelInfo> g_levels;

LevelInfo level_info(int level) {
  std::lock_guard<std::mutex> lock(g_levels_mutex);
  auto it = g_levels.find(level);
  return it == g_levels.end() ? LevelInfo{} : it->second;
}
}  // namespace

int new_jvp_level(int64_t batch) {
  int level = ++g_level;
  const LevelInfo info{std::max<int64_t>(batch, 0), reverse_trace_depth() > 0};
  if (info.batch > 0 || info.under_reverse) {
    std::lock_guard<std::mutex> lock(g_levels_mutex);
    g_levels[level] = info;
  }
  return level;
}
void end_jvp_level(int level) {
  std::lock_guard<std::mutex> lock(g_levels_mutex);
  g_levels.erase(level);
}
bool jvp_level_under_reverse(int level) { return level_info(level).under_reverse; }
int64_t jvp_level_batch(int level) { return level_info(level).batch; }

Shape batched_shape(int64_t K, const Shape& s) {
  if (!K) return s;
  Shape r{K};
  for (auto d : s) r.push_back(d);
  return r;
}
std::vector<int> batched_perm(int64_t K, const std::vector<int>& perm) {
  if (!K) return perm;
  std::vector<int> r{0};
  for (int p : perm) r.push_back(p + 1);
  return r;
}

Tensor sum_to_batched(const Tensor& g, const Shape& shape, int64_t K) {
  if (!K) return sum_to(g, shape);
  const Shape want = batched_shape(K, shape);
  if (g.shape() == want) return g;
  // (K, 1.., *shape) aligned to g's rank keeps K in front; then drop the padding.
  Shape padded{K};
  for (int i = static_cast<int>(shape.size()) + 1; i < g.ndim(); ++i) padded.push_back(1);
  for (auto d : shape) padded.push_back(d);
  return reshape(sum_to(g, padded), want);
}
int& reverse_trace_depth() { return t_reverse_depth; }

// ---- make_op --------------------------------------------------------------------------------
namespace {
// Ops whose JVP rule treats every dim but the contracted one elementwise, so that a tangent shared
// across rows (size-1 dims) gives the right, still-shared result. Contractions (matmul, linear)
// check their contracted dim's size, so a shared contracted dim is an error, never a wrong answer.
bool accepts_shared_tangents(const char* name) {
  static const char* const kOps[] = {"add",  "sub",  "mul",   "div",       "neg",     "scale",     "add_scalar",
                                     "pow",  "exp",  "log",   "tanh",      "sigmoid", "relu",      "erf",
                                     "gelu", "gelu_grad",     "gelu_tanh", "softplus", "square",   "sqrt",
                                     "matmul",    "addmm",   "linear",
                                     "tanh_grad_mul", "residual"};
  for (const char* op : kOps)
    if (std::strcmp(op, name) == 0) return true;
  return false;
}
}  // namespace

Tensor make_op(const char* name, std::vector<Tensor> inputs, Array value, const JvpRule& jvp, VjpRule vjp) {
  bool record = false;
  if (t_grad_mode)
    for (auto& x : inputs) record |= x.requires_grad();
  bool any_tangent = false;
  for (auto& x : inputs) any_tangent |= x.has_tangents();

  Tensor out(value);
  if (record) {
    auto node = std::make_shared<Node>();
    node->name = name;
    node->seq = ++g_seq;
    node->out_value = value;
    node->vjp = std::move(vjp);
    node->inputs = inputs;
    node->out = out.impl_ptr();
    out.impl()->grad_fn = std::move(node);
  }
  if (!any_tangent) return out;

  // Forward mode: one pass of the jvp rule per level present on the inputs, outermost first.
  std::vector<int> levels;
  for (auto& x : inputs)
    for (auto& p : x.tangents()) levels.push_back(p.first);
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  std::vector<Tensor> primals(inputs.size()), tans(inputs.size());
  for (int level : levels) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      primals[i] = inputs[i].strip_levels_from(level);
      tans[i] = inputs[i].tangent(level);
    }
    // A fresh alias carrying the outer levels computed so far. It must not be `out` itself: the
    // rule's recorded graph may hold it, and `out` is about to hold the rule's result (a cycle).
    Tensor out_l = out.alias_below(level);
    const LevelInfo info = level_info(level);  // one lookup per level and op
    const int64_t K = info.batch;
    auto tangent = [&]() -> Tensor {
      if (K && !accepts_shared_tangents(name)) {
        // A tangent may share a direction across dims (size 1 where the input has more, e.g. one
        // basis vector for all samples). Only ops whose rule is elementwise in those dims may see it
        // that way; for the others (reductions, reshapes, norms) make it the full shape (a view).
        for (size_t i = 0; i < inputs.size(); ++i) {
          if (!tans[i].defined()) continue;
          const Shape full = batched_shape(K, inputs[i].shape());
          if (tans[i].shape() != full) tans[i] = broadcast_to(tans[i], full);
        }
      }
      if (K && inputs.size() > 1) {
        // Align each tangent's direction axis in front of the output's rank: (K, 1, .., *shape).
        for (size_t i = 0; i < inputs.size(); ++i) {
          if (!tans[i].defined() || tans[i].ndim() == out.ndim() + 1) continue;
          Shape padded{K};
          for (int k = tans[i].ndim() - 1; k < out.ndim(); ++k) padded.push_back(1);
          for (int k = 1; k < tans[i].ndim(); ++k) padded.push_back(tans[i].shape()[k]);
          tans[i] = reshape(tans[i], padded);
        }
      }
      JvpContext ctx{primals, tans, out_l, K};
      Tensor t = jvp(ctx);
      if (t.defined() && t.shape() != ctx.tshape(out.shape())) t = broadcast_to(t, ctx.tshape(out.shape()));
      return t;
    };
    Tensor t;
    try {
      // Only a reverse trace that was already running when the level opened (reverse-over-
      // forward) differentiates its tangents; one opened inside the level (forward-over-reverse,
      // jl.hvp) differentiates primals only. Otherwise the tangent's graph would never be used,
      // so it is not recorded, and first-order fused rules apply (all_constant).
      GradModeGuard tangent_graph(t_grad_mode && info.under_reverse);
      t = tangent();
    } catch (const UnbatchableError&) {
      throw;
    } catch (const ValueError& e) {  // e.g. a batched value beyond 4-D: the caller may go one by one
      if (!K) throw;
      throw UnbatchableError(str_cat(name, ": forward mode with a batch of ", K, " directions failed: ", e.what()));
    }
    if (!t.defined()) continue;
    out.impl()->tangents.emplace_back(level, std::move(t));
  }
  return out;
}

Tensor watch(const Tensor& x) {
  // An identity node, always recorded: its input keeps the link to any outer graph of x.
  auto node = std::make_shared<Node>();
  node->name = "input";
  node->seq = ++g_seq;
  node->inputs = {x};
  node->out_value = x.value();
  node->vjp = [](const VjpContext& c) { return std::vector<Tensor>{c.g}; };
  Tensor out(x.value());
  out.impl()->grad_fn = std::move(node);
  out.impl()->tangents = x.tangents();
  return out;
}

// ---- backward -------------------------------------------------------------------------------
std::vector<Tensor> backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& cotangents,
                             const std::vector<Tensor>& inputs, bool create_graph, int64_t batch,
                             bool tangents_only) {
  if (batch < 0) throw ValueError("backward: batch must be >= 0");
  if (batch && create_graph)
    throw ValueError("backward: a batch of cotangents is first order only (no create_graph)");
  GradModeGuard mode(create_graph);
  std::unordered_map<Node*, std::vector<size_t>> target_of;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) throw ValueError("backward: every input must be watched (have a grad_fn)");
    target_of[inputs[i].grad_fn().get()].push_back(i);
  }
  // Collect the nodes between outputs and targets: `needed` = some target is reachable from it.
  std::unordered_map<Node*, bool> needed;
  std::vector<std::pair<Node*, size_t>> stack;
  for (auto& y : outputs)
    if (y.requires_grad() && !needed.count(y.grad_fn().get())) {
      stack.emplace_back(y.grad_fn().get(), 0);
      needed[y.grad_fn().get()] = false;
    }
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (target_of.count(node)) {
      needed[node] = true;
      stack.pop_back();
      continue;
    }
    if (next < node->inputs.size()) {
      Node* child = node->inputs[next++].grad_fn().get();
      if (child && !needed.count(child)) {
        needed[child] = false;
        stack.emplace_back(child, 0);
      }
      continue;
    }
    bool any = false;
    for (auto& x : node->inputs)
      if (x.grad_fn()) any |= needed[x.grad_fn().get()];
    needed[node] = any;
    stack.pop_back();
  }
  std::vector<Node*> order;
  for (auto& [n, need] : needed)
    if (need) order.push_back(n);
  std::sort(order.begin(), order.end(), [](Node* a, Node* b) { return a->seq > b->seq; });

  std::unordered_map<Node*, Tensor> acc;
  auto accumulate = [&](Node* n, const Tensor& g) {
    Tensor& slot = acc[n];
    slot = slot.defined() ? add(slot, g) : g;
  };
  for (size_t k = 0; k < outputs.size(); ++k) {
    auto& y = outputs[k];
    Tensor ct = cotangents[k];
    // Cotangents given as host data (NumPy) follow their output to its device.
    if (ct.device() != y.device() && ct.device().type == DeviceType::CPU) ct = to(ct, y.device());
    if (ct.device() != y.device())
      throw_value("vjp: cotangent ", k, " lives on ", ct.device().str(), " but its output on ", y.device().str());
    if (ct.shape() != batched_shape(batch, y.shape()) || ct.dtype() != y.dtype())
      throw_value("vjp: cotangent ", k, " is a ", describe(ct), " but the output is a ", describe(y),
                  batch ? str_cat(" (with ", batch, " directions on a leading axis)") : std::string());
    if (y.requires_grad() && needed[y.grad_fn().get()]) accumulate(y.grad_fn().get(), ct);
  }

  std::vector<Tensor> result(inputs.size());
  std::vector<bool> needs, tangent_only;
  tangents_only &= !create_graph;
  for (Node* node : order) {
    auto it = acc.find(node);
    if (it == acc.end()) continue;
    Tensor g = std::move(it->second);
    acc.erase(it);
    auto tgt = target_of.find(node);
    if (tgt != target_of.end()) {
      for (size_t i : tgt->second) result[i] = g;
      continue;
    }
    needs.assign(node->inputs.size(), false);
    tangent_only.assign(node->inputs.size(), false);
    bool any_tangent = g.has_tangents();
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      auto& x = node->inputs[i];
      needs[i] = x.grad_fn() && needed[x.grad_fn().get()];
      // A cotangent that flows straight into a result (a target) and nowhere else.
      tangent_only[i] = tangents_only && needs[i] && target_of.count(x.grad_fn().get());
      any_tangent |= x.has_tangents();
    }
    const bool differentiable = create_graph || any_tangent;
    const Tensor saved_out = differentiable ? Tensor(node->out.lock()) : Tensor();
    VjpContext ctx{node->inputs, g, node->out_value, saved_out, needs, differentiable, batch,
                   tangents_only ? &tangent_only : nullptr};
    try {
      std::vector<Tensor> grads = node->vjp(ctx);
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        if (!needs[i] || i >= grads.size() || !grads[i].defined()) continue;
        const Tensor& x = node->inputs[i];
        accumulate(x.grad_fn().get(), sum_to_batched(grads[i], x.shape(), batch));
      }
    } catch (const UnbatchableError&) {
      throw;
    } catch (const ValueError& e) {  // e.g. a batched value beyond 4-D: the caller may go one by one
      if (!batch) throw;
      throw UnbatchableError(str_cat(node->name, ": reverse mode with a batch of ", batch,
                                     " cotangents failed: ", e.what()));
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    if (!result[i].defined()) result[i] = Tensor(Array::zeros(batched_shape(batch, inputs[i].shape()), inputs[i].dtype(), inputs[i].device()));
  return result;
}

bool all_constant(std::initializer_list<Tensor> ts) {
  for (const Tensor& t : ts)
    if (t.defined() && ((t_grad_mode && t.requires_grad()) || t.has_tangents())) return false;
  return true;
}

}  // namespace jaclab
