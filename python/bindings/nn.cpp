// Blocks of jaclab.nn (the Python classes hold parameters and call these).
#include "common.h"
#include "jaclab/nn.h"

namespace jaclab::py_bind {

namespace {
Tensor opt_tensor(py::handle h) { return h.is_none() ? Tensor() : to_tensor(h); }
}  // namespace

void bind_nn(py::module_& m) {
  using A = const ArrayLike&;
  m.def("nn_activate", [](A x, const std::string& act) { return nn::activate(x.t, nn::activation_from_name(act)); });
  m.def("nn_mlp", [](A x, A W1, A b1, A W2, A b2, const std::string& act) {
        return nn::mlp(x.t, W1.t, b1.t, W2.t, b2.t, nn::activation_from_name(act));
      }, py::arg("x"), py::arg("W1"), py::arg("b1"), py::arg("W2"), py::arg("b2"), py::arg("activation"));
  m.def("nn_attention", [](A x, A Wq, A Wk, A Wv, A Wo, int n_heads, bool causal) {
        return nn::multi_head_attention(x.t, Wq.t, Wk.t, Wv.t, Wo.t, n_heads, causal);
      }, py::arg("x"), py::arg("Wq"), py::arg("Wk"), py::arg("Wv"), py::arg("Wo"), py::arg("n_heads"),
      py::arg("causal"));
  m.def("nn_transformer_block",
        [](A x, py::object n1g, py::object n1b, A Wq, A Wk, A Wv, A Wo, py::object n2g, py::object n2b, A W1, A b1,
           A W2, A b2, int n_heads, bool causal, const std::string& norm, double scale, const std::string& act) {
          nn::TransformerParams p{opt_tensor(n1g), opt_tensor(n1b), opt_tensor(n2g), opt_tensor(n2b), Wq.t, Wk.t,
                                  Wv.t,           Wo.t,           W1.t,           b1.t,           W2.t, b2.t};
          return nn::transformer_block(x.t, p, n_heads, causal, nn::norm_from_name(norm), scale,
                                       nn::activation_from_name(act));
        });
}

}  // namespace jaclab::py_bind
