// Functions of jl (NumPy style). Every argument accepts a jl.Tensor or an array-like.
#include "common.h"
#include "jaclab/kernels.h"

namespace jaclab::py_bind {

py::object reduce_op(const Tensor& t, py::handle axis, bool keepdims, bool is_mean);

void bind_ops(py::module_& m) {
  using A = const ArrayLike&;
  m.def("array",
        [](py::object a, py::object dtype, py::object device) {
          Tensor t = to_tensor(a, dtype);
          return device.is_none() ? t : to(t, parse_device(device.cast<std::string>()));
        },
        py::arg("a"), py::arg("dtype") = py::none(), py::arg("device") = py::none(),
        "Tensor from an array-like. C-contiguous float32/float64 NumPy arrays are wrapped without a copy "
        "(treat them as read-only afterwards); other layouts are copied; integer arrays become int64. "
        "CUDA arrays (CuPy, anything with __dlpack__ on a CUDA device) are wrapped without a copy. "
        "device: 'cpu', 'cuda' or 'cuda:N' copies the result there.");
#define JL_UNARY(name, doc) m.def(#name, [](A x) { return name(x.t); }, py::arg("x"), doc)
  JL_UNARY(tanh, "Elementwise tanh.");
  JL_UNARY(exp, "Elementwise exp.");
  JL_UNARY(log, "Elementwise natural log.");
  JL_UNARY(sigmoid, "Elementwise logistic sigmoid 1/(1+exp(-x)).");
  JL_UNARY(relu, "Elementwise max(x, 0); derivative at 0 is taken as 0.");
  JL_UNARY(gelu, "GELU, exact erf form: x * Phi(x).");
  JL_UNARY(gelu_tanh, "GELU, tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).");
  JL_UNARY(softplus, "Elementwise log(1 + exp(x)), computed stably.");
  JL_UNARY(erf, "Elementwise error function.");
  JL_UNARY(sqrt, "Elementwise square root.");
  JL_UNARY(square, "Elementwise x**2.");
  JL_UNARY(neg, "Elementwise -x.");
#undef JL_UNARY
  m.def("add", [](A a, A b) { return add(a.t, b.t); });
  m.def("subtract", [](A a, A b) { return sub(a.t, b.t); });
  m.def("multiply", [](A a, A b) { return mul(a.t, b.t); });
  m.def("divide", [](A a, A b) { return div(a.t, b.t); });
  m.def("power", [](A a, double p) { return pow(a.t, p); }, py::arg("x"), py::arg("exponent"));
  m.def("matmul", [](A a, A b) { return matmul(a.t, b.t); }, "NumPy matmul: batched, broadcasting batch dims.");
  m.def("sum", [](A x, py::object axis, bool keepdims) { return reduce_op(x.t, axis, keepdims, false); },
        py::arg("x"), py::arg("axis") = py::none(), py::arg("keepdims") = false);
  m.def("mean", [](A x, py::object axis, bool keepdims) { return reduce_op(x.t, axis, keepdims, true); },
        py::arg("x"), py::arg("axis") = py::none(), py::arg("keepdims") = false);
  m.def("reshape", [](A x, Shape s) { return reshape(x.t, s); }, py::arg("x"), py::arg("shape"));
  m.def("transpose", [](A x, py::object axes) {
        if (axes.is_none()) return transpose(x.t);
        return permute(x.t, axes.cast<std::vector<int>>());
      }, py::arg("x"), py::arg("axes") = py::none());
  m.def("swapaxes", [](A x, int a, int b) { return swapaxes(x.t, a, b); });
  m.def("broadcast_to", [](A x, Shape s) { return broadcast_to(x.t, s); }, py::arg("x"), py::arg("shape"));
  m.def("softmax", [](A x, int axis) { return softmax(x.t, axis); }, py::arg("x"), py::arg("axis") = -1);
  m.def("log_softmax", [](A x, int axis) { return log_softmax(x.t, axis); }, py::arg("x"), py::arg("axis") = -1);
  m.def("layer_norm", [](A x, A g, A b, double eps) { return layer_norm(x.t, g.t, b.t, eps); }, py::arg("x"),
        py::arg("g"), py::arg("b"), py::arg("eps") = 1e-5,
        "LayerNorm over the last axis (biased variance): (x - mean) / sqrt(var + eps) * g + b.");
  m.def("residual", [](A x, A f, double s) { return residual(x.t, f.t, s); }, py::arg("x"), py::arg("f"),
        py::arg("scale"), "x + scale * f, a residual block's combination as one node (x and f of one shape).");
  m.def("linear", [](A x, A W, A b) { return linear(x.t, W.t, b.t); }, py::arg("x"), py::arg("W"), py::arg("b"),
        "Fused x @ W + b for x (..., K), W (K, N), b (N,).");
  m.def("layer_norm_composite", [](A x, A g, A b, double eps) { return layer_norm_composite(x.t, g.t, b.t, eps); },
        py::arg("x"), py::arg("g"), py::arg("b"), py::arg("eps") = 1e-5, "layer_norm written with primitives (reference).");
  m.def("attention_composite", [](A q, A k, A v, bool causal) { return attention_composite(q.t, k.t, v.t, causal); },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = false, "attention written with primitives (reference).");
  m.def("rms_norm", [](A x, A g, double eps) { return rms_norm(x.t, g.t, eps); }, py::arg("x"), py::arg("g"),
        py::arg("eps") = 1e-6, "RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * g.");
  m.def("attention", [](A q, A k, A v, bool causal) { return attention(q.t, k.t, v.t, causal); }, py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("causal") = false,
        "Scaled dot-product attention on (B, H, T, dh) inputs: softmax(q k^T / sqrt(dh) [+ causal mask]) v.");
  m.def("cross_entropy", [](A logits, A labels) { return cross_entropy(logits.t, labels.t); }, py::arg("logits"),
        py::arg("labels"),
        "Mean over the batch of -log softmax(logits)[label]. logits (B, C); labels int (B,) or probabilities (B, C).");
  m.def("mse", [](A pred, A target) { return mse(pred.t, target.t); }, py::arg("pred"), py::arg("target"),
        "Mean of squared differences over all elements.");
  m.def("zeros",
        [](Shape s, py::object dtype, std::string device) {
          return Tensor(Array::zeros(s, dtype_from_py(dtype), parse_device(device)));
        },
        py::arg("shape"), py::arg("dtype") = py::dtype::of<double>(), py::arg("device") = "cpu");
  m.def("ones",
        [](Shape s, py::object dtype, std::string device) {
          return Tensor(Array::full(s, dtype_from_py(dtype), 1.0, parse_device(device)));
        },
        py::arg("shape"), py::arg("dtype") = py::dtype::of<double>(), py::arg("device") = "cpu");
}

}  // namespace jaclab::py_bind
