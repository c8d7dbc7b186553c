// Shared by the binding TUs: conversions between Python objects and jaclab tensors.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "jaclab/backend.h"
#include "jaclab/ops.h"
#include "jaclab/tensor.h"

namespace py = pybind11;

namespace jaclab::py_bind {

// NumPy array / scalar / nested list -> Tensor. C-contiguous float32/float64 arrays are wrapped
// without a copy (the tensor keeps the array alive); other layouts are copied; integer arrays
// become int64 (labels). `dtype` (a NumPy dtype-like or None) casts.
Tensor to_tensor(py::handle obj, py::object dtype = py::none());
// Python scalars take the dtype of `like`; everything else goes through to_tensor.
Tensor to_tensor_like(py::handle obj, const Tensor& like);
DType dtype_from_py(py::handle dtype);
py::dtype dtype_to_py(DType d);

void bind_tensor(py::module_& m);
void bind_ops(py::module_& m);
void bind_transforms(py::module_& m);
void bind_nn(py::module_& m);
void bind_optim(py::module_& m);
void bind_cuda(py::module_& m);
Tensor from_dlpack(py::object obj);
void bind_dlpack(py::module_& m, py::class_<Tensor>& cls);

}  // namespace jaclab::py_bind

// Arguments typed ArrayLike accept a jl.Tensor or anything NumPy can turn into an array.
struct ArrayLike {
  jaclab::Tensor t;
};

namespace pybind11::detail {
// jaclab::Shape <-> Python sequence of ints / tuple.
template <>
struct type_caster<jaclab::Shape> {
  PYBIND11_TYPE_CASTER(jaclab::Shape, const_name("tuple[int, ...]"));
  bool load(handle src, bool) {
    if (!isinstance<sequence>(src) || isinstance<str>(src)) return false;
    value.clear();
    for (auto item : reinterpret_borrow<sequence>(src)) value.push_back(item.cast<int64_t>());
    return true;
  }
  static handle cast(const jaclab::Shape& s, return_value_policy, handle) {
    tuple t(s.size());
    for (size_t i = 0; i < s.size(); ++i) t[i] = int_(s[i]);
    return t.release();
  }
};

template <>
struct type_caster<ArrayLike> {
  PYBIND11_TYPE_CASTER(ArrayLike, const_name("ArrayLike"));
  bool load(handle src, bool convert) {
    if (isinstance<jaclab::Tensor>(src)) {
      value.t = src.cast<jaclab::Tensor>();
      return true;
    }
    if (!convert || src.is_none()) return false;
    value.t = jaclab::py_bind::to_tensor(src);
    return true;
  }
  static handle cast(const ArrayLike& v, return_value_policy p, handle parent) {
    return type_caster_base<jaclab::Tensor>::cast(v.t, return_value_policy::move, parent);
  }
};
}  // namespace pybind11::detail
