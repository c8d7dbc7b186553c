#include "jaclab/transforms.h"

#include "jaclab/autograd.h"
#include "jaclab/kernels.h"
#include "jaclab/ops.h"

namespace jaclab {

void check_like(const TensorList& expected, const TensorList& given, const char* what) {
  if (expected.size() != given.size())
    throw_value("expected ", expected.size(), " ", what, "s, got ", given.size());
  for (size_t i = 0; i < given.size(); ++i) {
    if (!given[i].defined()) throw_value(what, " ", i, " is undefined");
    if (given[i].shape() != expected[i].shape() || given[i].dtype() != expected[i].dtype())
      throw_value(what, " ", i, " is a ", describe(given[i]), " but must match the ", describe(expected[i]));
  }
}

namespace {
JvpResult jvp_impl(const Fn& f, const TensorList& primals, const TensorList& tangents_in, int64_t K) {
  TensorList tangents = tangents_in;
  for (size_t i = 0; i < primals.size(); ++i) {
    require_float(primals[i], "jvp");
    // Tangents given as host data (NumPy) follow their primal to its device.
    if (tangents[i].device() != primals[i].device() && tangents[i].device().type == DeviceType::CPU)
      tangents[i] = to(tangents[i], primals[i].device());
    if (tangents[i].device() != primals[i].device())
      throw_value("jvp: tangent ", i, " lives on ", tangents[i].device().str(), " but its primal on ",
                  primals[i].device().str(), "; put both on one device");
  }
  // Non-finite tangents are an error. Scan the smaller side first: a NaN or Inf tangent that reaches
  // an output makes that output's tangent non-finite, so when the outputs are smaller (an MLP's
  // weight tangents are 6x its output) the inputs are scanned only if an output is non-finite. A
  // non-finite tangent that no output depends on then passes: it cannot change the result.
  auto check_inputs = [&] {
    for (size_t i = 0; i < tangents.size(); ++i)
      if (!kernels::all_finite(tangents[i].value()))
        throw_value("jvp: tangent ", i, " (", describe(tangents[i]), ") contains NaN or Inf");
  };
  int64_t in_elements = 0;
  for (auto& t : tangents) in_elements += t.numel();
  const int level = new_jvp_level(K);
  struct LevelEnd {  // forget the level's batch size however we leave
    int level;
    ~LevelEnd() { end_jvp_level(level); }
  } level_end{level};
  TensorList duals(primals.size());
  for (size_t i = 0; i < primals.size(); ++i) duals[i] = primals[i].with_tangent(level, tangents[i]);
  TensorList out = f(duals);
  JvpResult r;
  int64_t out_elements = 0;
  for (auto& y : out) {
    if (!y.defined()) throw_value("jvp: the function returned an undefined tensor");
    Tensor t = y.tangent(level);
    const Shape want = batched_shape(K, y.shape());
    if (!t.defined()) t = Tensor(Array::zeros(want, y.dtype(), y.device()));
    else if (t.shape() != want) t = broadcast_to(t, want);  // directions shared by all rows (a view)
    out_elements += t.numel();
    r.tangents.push_back(t);
    r.out.push_back(y.strip_levels_from(level));
  }
  if (in_elements <= out_elements) {
    check_inputs();
  } else {
    for (auto& t : r.tangents)
      if (!kernels::all_finite(t.value())) {
        check_inputs();
        break;
      }
  }
  return r;
}
}  // namespace

JvpResult jvp(const Fn& f, const TensorList& primals, const TensorList& tangents) {
  check_like(primals, tangents, "tangent");
  return jvp_impl(f, primals, tangents, 0);
}

JvpResult jvp_batched(const Fn& f, const TensorList& primals, const TensorList& tangents, int64_t K) {
  if (K <= 0) throw_value("jvp: the number of tangent directions must be positive, got ", K);
  if (tangents.size() != primals.size())
    throw_value("expected ", primals.size(), " tangents, got ", tangents.size());
  for (size_t i = 0; i < primals.size(); ++i) {
    // (K, *shape), where dims may be 1 to share a direction across them (e.g. the same basis
    // vector for every sample: (K, 1, d) for a (B, d) input costs the first product once).
    const Shape want = batched_shape(K, primals[i].shape());
    const Tensor& t = tangents[i];
    bool ok = t.defined() && t.dtype() == primals[i].dtype() && t.shape().size() == want.size() && t.shape()[0] == K;
    for (size_t d = 1; ok && d < want.size(); ++d) ok = t.shape()[d] == want[d] || t.shape()[d] == 1;
    if (!ok)
      throw_value("tangent ", i, " is a ", describe(t), " but a batch of ", K, " directions for the ",
                  describe(primals[i]), " must have shape ", shape_str(want), " (dims after the first may be 1)");
  }
  return jvp_impl(f, primals, tangents, K);
}

namespace {
struct ReverseTrace {  // marks "a reverse sweep will differentiate what runs now"
  ReverseTrace() { ++reverse_trace_depth(); }
  ~ReverseTrace() { --reverse_trace_depth(); }
};
}  // namespace

TensorList VjpFunction::operator()(const TensorList& cotangents) const {
  check_like(outputs_, cotangents, "cotangent");
  // Record the sweep only when someone outside may differentiate it.
  bool create_graph = reverse_trace_depth() > 0;
  for (auto& c : cotangents) create_graph |= c.requires_grad();
  return backward(outputs_, cotangents, inputs_, create_graph);
}

TensorList VjpFunction::tangents_only(const TensorList& cotangents) const {
  check_like(outputs_, cotangents, "cotangent");
  bool create_graph = reverse_trace_depth() > 0;
  for (auto& c : cotangents) create_graph |= c.requires_grad();
  return backward(outputs_, cotangents, inputs_, create_graph, 0, /*tangents_only=*/true);
}

TensorList VjpFunction::batched(const TensorList& cotangents, int64_t K) const {
  if (K <= 0) throw_value("vjp: the number of cotangent directions must be positive, got ", K);
  if (cotangents.size() != outputs_.size())
    throw_value("expected ", outputs_.size(), " cotangents, got ", cotangents.size());
  return backward(outputs_, cotangents, inputs_, false, K);
}

VjpResult vjp(const Fn& f, const TensorList& primals) {
  TensorList watched(primals.size());
  for (size_t i = 0; i < primals.size(); ++i) {
    require_float(primals[i], "vjp");
    watched[i] = watch(primals[i]);
  }
  TensorList out;
  {
    ReverseTrace trace;
    out = f(watched);
  }
  for (auto& y : out)
    if (!y.defined()) throw_value("vjp: the function returned an undefined tensor");
  return VjpResult{out, VjpFunction(out, watched)};
}

ValueAndGrad value_and_grad(const Fn& f, const TensorList& primals) {
  VjpResult r = vjp(f, primals);
  if (r.out.size() != 1 || r.out[0].numel() != 1 || r.out[0].ndim() != 0)
    throw_value("grad: the function must return a single scalar (0-d) tensor, got ",
                r.out.size() == 1 ? describe(r.out[0]) : str_cat(r.out.size(), " outputs"));
  return {r.out[0], r.pullback({Tensor(Array::scalar(1.0, r.out[0].dtype(), r.out[0].device()))})};
}

TensorList grad(const Fn& f, const TensorList& primals) { return value_and_grad(f, primals).grads; }

TensorList hvp(const Fn& f, const TensorList& primals, const TensorList& tangents) {
  // jvp(grad f): only the gradient's tangents are read, so its values may be skipped.
  Fn g = [&f](const TensorList& x) {
    VjpResult r = vjp(f, x);
    if (r.out.size() != 1 || r.out[0].numel() != 1 || r.out[0].ndim() != 0)
      throw_value("hvp: the function must return a single scalar (0-d) tensor, got ",
                  r.out.size() == 1 ? describe(r.out[0]) : str_cat(r.out.size(), " outputs"));
    return r.pullback.tangents_only({Tensor(Array::scalar(1.0, r.out[0].dtype(), r.out[0].device()))});
  };
  return jvp(g, primals, tangents).tangents;
}

}  // namespace jaclab
