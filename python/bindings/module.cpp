// The _core extension: Tensor, ops and transforms. Thin: conversions and argument handling only.
#include <pybind11/functional.h>

#include "common.h"
#include "jaclab/autograd.h"
#include "jaclab/blas.h"
#include "jaclab/parallel.h"
#include "jaclab/kernels.h"
#include "jaclab/transforms.h"

namespace jaclab::py_bind {

// A writable NumPy array over a contiguous CPU Array's memory; the array's base capsule owns a
// reference to the block, so the memory lives as long as any NumPy view of it.
static py::array writable_numpy(const Array& a) {
  auto* keep = new Array(a);
  py::capsule base(keep, [](void* p) { delete static_cast<Array*>(p); });
  std::vector<ssize_t> shape(a.shape().begin(), a.shape().end());
  return py::array(dtype_to_py(a.dtype()), shape, a.raw(), base);
}

DType dtype_from_py(py::handle dtype) {
  py::dtype d = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype));
  if (d.kind() == 'f' && d.itemsize() == 4) return DType::Float32;
  if (d.kind() == 'f' && d.itemsize() == 8) return DType::Float64;
  if (d.kind() == 'i' && d.itemsize() == 8) return DType::Int64;
  throw TypeError(str_cat("jaclab supports float32, float64 and int64 (labels), not ", std::string(py::str(d))));
}

py::dtype dtype_to_py(DType d) {
  switch (d) {
    case DType::Float32: return py::dtype::of<float>();
    case DType::Float64: return py::dtype::of<double>();
    default: return py::dtype::of<int64_t>();
  }
}

// An array living on a GPU: it says so through __dlpack_device__ (DLPack device type 2 = CUDA).
bool is_device_array(py::handle obj) {
  if (!py::hasattr(obj, "__dlpack_device__") || py::isinstance<py::array>(obj)) return false;
  py::tuple dev = obj.attr("__dlpack_device__")();
  return dev[0].cast<int>() != 1;  // 1 = CPU
}

Tensor to_tensor(py::handle obj, py::object dtype) {
  if (py::isinstance<Tensor>(obj)) {
    Tensor t = obj.cast<Tensor>();
    if (dtype.is_none() || dtype_from_py(dtype) == t.dtype()) return t;
    return Tensor(t.value().astype(dtype_from_py(dtype)));
  }
  if (is_device_array(obj)) {  // CuPy & co: zero-copy through DLPack, then the dtype if asked
    Tensor t = from_dlpack(py::reinterpret_borrow<py::object>(obj));
    if (dtype.is_none() || dtype_from_py(dtype) == t.dtype()) return t;
    return Tensor(t.value().astype(dtype_from_py(dtype)));
  }
  py::module_ np = py::module_::import("numpy");
  py::object arr_obj = np.attr("asarray")(obj);
  py::array arr = arr_obj.cast<py::array>();
  char kind = arr.dtype().kind();
  DType target;
  if (!dtype.is_none()) {
    target = dtype_from_py(dtype);
  } else if (kind == 'f' && (arr.itemsize() == 4 || arr.itemsize() == 8)) {
    target = arr.itemsize() == 4 ? DType::Float32 : DType::Float64;
  } else if (kind == 'i' || kind == 'u') {
    target = DType::Int64;
  } else {
    throw TypeError(str_cat("cannot make a jaclab tensor from an array of dtype ", std::string(py::str(arr.dtype())),
                            " (supported: float32, float64, integer labels)"));
  }
  if (kind == 'b' || kind == 'c' || kind == 'O' || kind == 'U' || kind == 'S')
    throw TypeError(str_cat("cannot make a jaclab tensor from an array of dtype ", std::string(py::str(arr.dtype()))));
  py::dtype want = dtype_to_py(target);
  // Zero-copy needs C order, alignment and the exact dtype; otherwise NumPy makes one copy.
  if (!arr.dtype().equal(want) || !(arr.flags() & py::array::c_style) || !(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    arr = np.attr("ascontiguousarray")(arr, want).cast<py::array>();
  Shape shape(arr.shape(), arr.shape() + arr.ndim());
  void* data = const_cast<void*>(arr.data());
  PyObject* owner = arr.release().ptr();
  auto release = [](void* p) {
    py::gil_scoped_acquire gil;
    Py_DECREF(static_cast<PyObject*>(p));
  };
  return Tensor(Array::from_blob(data, shape, contiguous_strides(shape), target, Device{},
                                 std::shared_ptr<void>(owner, release)));
}

Tensor to_tensor_like(py::handle obj, const Tensor& like) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  if (py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj)) {
    if (py::isinstance<py::bool_>(obj)) throw TypeError("booleans are not numbers here");
    return scalar_like(like, obj.cast<double>());
  }
  return to_tensor(obj);
}

}  // namespace jaclab::py_bind

using namespace jaclab;
using namespace jaclab::py_bind;

PYBIND11_MODULE(_core, m) {
  m.doc() = "jaclab C++ engine (tensors, ops with forward/JVP/VJP rules, transforms)";
  static py::exception<jaclab::UnbatchableError> unbatchable(m, "UnbatchableError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const jaclab::UnbatchableError& e) {
      py::set_error(unbatchable, e.what());
    } catch (const jaclab::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const jaclab::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  bind_tensor(m);
  bind_ops(m);
  bind_transforms(m);
  bind_nn(m);
  bind_optim(m);
  bind_cuda(m);
  m.def("_release_to_numpy", [](py::object obj) -> py::object {
        // A writable NumPy array over a CPU tensor's memory, for results handed to the caller
        // (np.asarray(t) is read-only because tensors share memory). Only for a contiguous tensor
        // that nothing but this handle references; the caller hands the tensor over and must not
        // use it afterwards. None otherwise.
        Tensor& t = obj.cast<Tensor&>();
        const Array& a = t.value();
        if (a.device().type != DeviceType::CPU || !a.is_contiguous() || !is_float(a.dtype()) ||
            !a.storage()->own_block ||  // engine memory only: a wrapped array may alias someone's
            t.impl_ptr().use_count() != 1 || a.storage().use_count() != 1 || t.requires_grad() || t.has_tangents())
          return py::none();
        return writable_numpy(a);
      }, py::arg("t"));
  // Float64 vector kernels for host-side iterations (jl.analysis' Lanczos): the engine's BLAS,
  // whose threads are the ones the HVPs' GEMMs use (NumPy's BLAS would wake a second pool).
  using Vec = py::array_t<double, py::array::c_style>;
  auto vec = [](const py::array& a, const char* op, const char* name, bool writable) {
    if (!py::isinstance<Vec>(a) || a.ndim() != 1 || !(a.flags() & py::array::c_style) || (writable && !a.writeable()))
      throw ValueError(str_cat(op, ": ", name, " must be a ", writable ? "writable " : "",
                               "C-contiguous 1-d float64 array, got dtype ", std::string(py::str(a.dtype())),
                               ", ndim ", a.ndim()));
    return a.cast<Vec>();
  };
  m.def("_vec_dot", [vec](const py::array& x, const py::array& y) {
        Vec xv = vec(x, "_vec_dot", "x", false), yv = vec(y, "_vec_dot", "y", false);
        if (xv.size() != yv.size()) throw ValueError(str_cat("_vec_dot: lengths differ, ", xv.size(), " vs ", yv.size()));
        py::gil_scoped_release release;
        return blas::dot(xv.size(), xv.data(), yv.data());
      }, py::arg("x"), py::arg("y"));
  m.def("_vec_axpy", [vec](double alpha, const py::array& x, py::array& y) {  // y += alpha x, in place
        Vec xv = vec(x, "_vec_axpy", "x", false), yv = vec(y, "_vec_axpy", "y", true);
        if (xv.size() != yv.size()) throw ValueError(str_cat("_vec_axpy: lengths differ, ", xv.size(), " vs ", yv.size()));
        py::gil_scoped_release release;
        blas::axpy(xv.size(), alpha, xv.data(), yv.mutable_data());
      }, py::arg("alpha"), py::arg("x"), py::arg("y"));
  m.def("_vec_scal", [vec](double alpha, py::array& x) {  // x *= alpha, in place
        Vec xv = vec(x, "_vec_scal", "x", true);
        py::gil_scoped_release release;
        blas::scal(xv.size(), alpha, xv.mutable_data());
      }, py::arg("alpha"), py::arg("x"));
  m.def("_tridiagonal_eigh", [vec](const py::array& diag, const py::array& offdiag) {
        // (eigenvalues ascending (n,), eigenvectors as columns (n, n)) of a symmetric tridiagonal
        Vec dv = vec(diag, "_tridiagonal_eigh", "diag", false), ev = vec(offdiag, "_tridiagonal_eigh", "offdiag", false);
        const int64_t n = dv.size();
        if (ev.size() != std::max<int64_t>(n - 1, 0))
          throw ValueError(str_cat("_tridiagonal_eigh: offdiag must have n - 1 = ", std::max<int64_t>(n - 1, 0),
                                   " entries for a diagonal of ", n, ", got ", ev.size()));
        Vec w(n), z(std::vector<py::ssize_t>{n, n});
        std::vector<double> e(ev.data(), ev.data() + ev.size());
        std::copy(dv.data(), dv.data() + n, w.mutable_data());
        {
          py::gil_scoped_release release;
          blas::tridiagonal_eigh(n, w.mutable_data(), e.data(), z.mutable_data());
        }
        return py::make_tuple(w, z);
      }, py::arg("diag"), py::arg("offdiag"));
  m.def("_singular_values", [](const py::array& a) {
        // (count, m, n) float64 -> (count, min(m, n)) singular values, descending
        using Mats = py::array_t<double, py::array::c_style>;
        if (!py::isinstance<Mats>(a) || a.ndim() != 3)
          throw ValueError(str_cat("_singular_values: expected a (count, m, n) float64 array, got dtype ",
                                   std::string(py::str(a.dtype())), ", ndim ", a.ndim()));
        const Mats in = a.cast<Mats>();
        const int64_t count = in.shape(0), rows = in.shape(1), cols = in.shape(2);
        Mats work(std::vector<py::ssize_t>{count, rows, cols});  // dgesdd overwrites its input
        std::copy(in.data(), in.data() + in.size(), work.mutable_data());
        Mats s(std::vector<py::ssize_t>{count, std::min(rows, cols)});
        {
          py::gil_scoped_release release;
          blas::singular_values(count, rows, cols, work.mutable_data(), s.mutable_data());
        }
        return s;
      }, py::arg("a"));
  // A writable, uninitialised NumPy array on an engine block, for large work arrays of the
  // analyses (a Lanczos basis): the engine's block cache keeps the memory mapped between calls.
  m.def("_workspace", [](const Shape& shape, py::object dtype) {
        return writable_numpy(Array::empty(shape, dtype_from_py(dtype)));
      }, py::arg("shape"), py::arg("dtype") = py::dtype::of<double>());
  m.def("cached_host_bytes", &cached_host_bytes);
  m.def("release_cached_host_memory", &release_cached_host_memory);
  m.def("blas_info", [] { return std::string(blas::name()); });
  m.def("blas_num_threads", [] { return blas::num_threads(); });
  m.def("pool_num_threads", [] { return parallel::num_threads(); });
  m.def("set_pool_num_threads", [](int n) { parallel::set_num_threads(n); });
  m.attr("__version__") = JACLAB_VERSION;
}
