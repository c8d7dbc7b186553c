// Flat-list transforms; jaclab/transforms.py adds pytrees and argnums on top.
#include <pybind11/functional.h>

#include "common.h"
#include "jaclab/autograd.h"
#include "jaclab/transforms.h"

namespace jaclab::py_bind {

void bind_transforms(py::module_& m) {
  py::class_<VjpFunction>(m, "VjpFunction")
      .def("__call__", [](const VjpFunction& f, const TensorList& ct, int64_t batch, bool tangents_only) {
            if (tangents_only && batch) throw ValueError("pullback: tangents_only takes no batch");
            return batch ? f.batched(ct, batch) : tangents_only ? f.tangents_only(ct) : f(ct);
          }, py::arg("cotangents"), py::arg("batch") = 0, py::arg("tangents_only") = false,
          "Cotangents -> input cotangents; with batch=K each carries K directions on a leading axis. "
          "tangents_only: the caller reads only the results' forward-mode tangents (their values may "
          "be zero placeholders).")
      .def_property_readonly("num_outputs", &VjpFunction::num_outputs);
  m.def("jvp_flat", [](const Fn& f, const TensorList& primals, const TensorList& tangents, int64_t batch) {
        JvpResult r = batch ? jvp_batched(f, primals, tangents, batch) : jvp(f, primals, tangents);
        return py::make_tuple(r.out, r.tangents);
      }, py::arg("f"), py::arg("primals"), py::arg("tangents"), py::arg("batch") = 0,
      "f: list[Tensor] -> list[Tensor]. Returns (f(primals), J tangents); with batch=K each tangent "
      "carries K directions on a leading axis.");
  m.def("vjp_flat", [](const Fn& f, const TensorList& primals) {
        VjpResult r = vjp(f, primals);
        return py::make_tuple(r.out, r.pullback);
      }, py::arg("f"), py::arg("primals"), "f: list[Tensor] -> list[Tensor]. Returns (f(primals), pullback).");
  m.def("reverse_trace_depth", [] { return reverse_trace_depth(); });
}

}  // namespace jaclab::py_bind
