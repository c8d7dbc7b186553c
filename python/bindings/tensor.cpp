// jl.Tensor: buffer protocol (zero-copy np.asarray), NumPy-like methods and operators.
#include "common.h"
#include "jaclab/kernels.h"

namespace jaclab::py_bind {
namespace {

std::vector<int> axes_arg(py::handle axis) {
  std::vector<int> axes;
  if (axis.is_none()) return axes;
  if (py::isinstance<py::int_>(axis)) return {axis.cast<int>()};
  for (auto a : axis) axes.push_back(a.cast<int>());
  if (axes.empty()) throw ValueError("axis=() reduces nothing; pass None to reduce all axes");
  return axes;
}

Shape shape_args(py::args args) {
  if (args.size() == 1 && !py::isinstance<py::int_>(args[0])) return args[0].cast<Shape>();
  return args.cast<Shape>();
}

}  // namespace

py::object reduce_op(const Tensor& t, py::handle axis, bool keepdims, bool is_mean) {
  std::vector<int> axes = axes_arg(axis);
  return py::cast(is_mean ? mean(t, axes, keepdims) : sum(t, axes, keepdims));
}

void bind_tensor(py::module_& m) {
  py::class_<Tensor> cls(m, "Tensor", py::buffer_protocol(), R"doc(
An immutable n-d array (up to 4-D, row-major, float32/float64, int64 for labels).

``np.asarray(t)`` is a zero-copy, read-only view. Operators follow NumPy broadcasting and
are differentiable under every jaclab transform.)doc");
  cls.def_buffer([](const Tensor& t) -> py::buffer_info {
    const Array& a = t.value();
    if (a.device().type != DeviceType::CPU)
      throw ValueError(str_cat("np.asarray: the tensor lives on ", a.device().str(), "; call .to('cpu') first"));
    const ssize_t item = static_cast<ssize_t>(dtype_size(a.dtype()));
    std::vector<ssize_t> shape(a.shape().begin(), a.shape().end()), strides;
    for (auto s : a.strides()) strides.push_back(static_cast<ssize_t>(s) * item);
    std::string fmt = a.dtype() == DType::Float32   ? py::format_descriptor<float>::format()
                      : a.dtype() == DType::Float64 ? py::format_descriptor<double>::format()
                                                    : py::format_descriptor<int64_t>::format();
    return py::buffer_info(a.raw(), item, fmt, a.ndim(), shape, strides, /*readonly=*/true);
  });
  cls.def(py::init([](py::object a, py::object dtype) { return to_tensor(a, dtype); }), py::arg("a"),
          py::arg("dtype") = py::none());
  cls.def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); });
  cls.def_property_readonly("dtype", [](const Tensor& t) { return dtype_to_py(t.dtype()); });
  cls.def_property_readonly("device", [](const Tensor& t) { return t.device().str(); });
  cls.def_property_readonly("ndim", &Tensor::ndim);
  cls.def_property_readonly("size", &Tensor::numel);
  cls.def_property_readonly("T", [](const Tensor& t) { return transpose(t); });
  cls.def("__len__", [](const Tensor& t) {
    if (t.ndim() == 0) throw py::type_error("len() of a 0-d tensor");
    return t.shape()[0];
  });
  cls.def("item", &Tensor::item);
  cls.def("__float__", &Tensor::item);
  cls.def("reshape", [](const Tensor& t, py::args shape) { return reshape(t, shape_args(shape)); });
  cls.def("transpose", [](const Tensor& t, py::args axes) {
    if (axes.size() == 0) return transpose(t);
    Shape perm = shape_args(axes);
    return permute(t, std::vector<int>(perm.begin(), perm.end()));
  });
  cls.def("sum", [](const Tensor& t, py::object axis, bool keepdims) { return reduce_op(t, axis, keepdims, false); },
          py::arg("axis") = py::none(), py::arg("keepdims") = false);
  cls.def("mean", [](const Tensor& t, py::object axis, bool keepdims) { return reduce_op(t, axis, keepdims, true); },
          py::arg("axis") = py::none(), py::arg("keepdims") = false);
  cls.def("astype", [](const Tensor& t, py::object dtype) { return Tensor(t.value().astype(dtype_from_py(dtype))); });
  cls.def("to", [](const Tensor& t, const std::string& device) { return to(t, parse_device(device)); },
          py::arg("device"), "A copy on 'cpu', 'cuda' or 'cuda:N' (the tensor itself when already there); differentiable.");
  cls.def("detach", &Tensor::detach, "The same value with no derivative information (a constant).");

  // Operators. Python scalars take the tensor's dtype.
  cls.def("__add__", [](const Tensor& a, py::object b) { return add(a, to_tensor_like(b, a)); }, py::is_operator());
  cls.def("__radd__", [](const Tensor& a, py::object b) { return add(to_tensor_like(b, a), a); }, py::is_operator());
  cls.def("__sub__", [](const Tensor& a, py::object b) { return sub(a, to_tensor_like(b, a)); }, py::is_operator());
  cls.def("__rsub__", [](const Tensor& a, py::object b) { return sub(to_tensor_like(b, a), a); }, py::is_operator());
  cls.def("__mul__", [](const Tensor& a, py::object b) { return mul(a, to_tensor_like(b, a)); }, py::is_operator());
  cls.def("__rmul__", [](const Tensor& a, py::object b) { return mul(to_tensor_like(b, a), a); }, py::is_operator());
  cls.def("__truediv__", [](const Tensor& a, py::object b) { return div(a, to_tensor_like(b, a)); }, py::is_operator());
  cls.def("__rtruediv__", [](const Tensor& a, py::object b) { return div(to_tensor_like(b, a), a); }, py::is_operator());
  cls.def("__matmul__", [](const Tensor& a, py::object b) { return matmul(a, to_tensor_like(b, a)); }, py::is_operator());
  cls.def("__rmatmul__", [](const Tensor& a, py::object b) { return matmul(to_tensor_like(b, a), a); }, py::is_operator());
  cls.def("__pow__", [](const Tensor& a, double p) { return pow(a, p); }, py::is_operator());
  cls.def("__neg__", [](const Tensor& a) { return neg(a); });
  cls.def("__pos__", [](const Tensor& a) { return a; });
  // `ndarray + tensor` must defer to Tensor.__radd__ (and stay differentiable), not convert.
  cls.attr("__array_ufunc__") = py::none();
  bind_dlpack(m, cls);
}

}  // namespace jaclab::py_bind
