// DLPack exchange: t.__dlpack__() / t.__dlpack_device__() and jl.from_dlpack(obj), zero-copy.
#include "common.h"
#include "dlpack_min.h"

namespace jaclab::py_bind {
namespace {

const char* kVersioned = "dltensor_versioned";
const char* kLegacy = "dltensor";

DLDataType to_dl(DType d) {
  switch (d) {
    case DType::Float32: return {kDLFloat, 32, 1};
    case DType::Float64: return {kDLFloat, 64, 1};
    default: return {kDLInt, 64, 1};
  }
}

DType from_dl(DLDataType t) {
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 32) return DType::Float32;
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 64) return DType::Float64;
  if (t.lanes == 1 && t.code == kDLInt && t.bits == 64) return DType::Int64;
  throw TypeError(str_cat("from_dlpack: unsupported dtype (code ", int(t.code), ", ", int(t.bits),
                          " bits); jaclab takes float32, float64 and int64"));
}

// What an exported capsule owns: the array (keeps storage alive) and the shape/stride buffers.
struct ExportCtx {
  Array array;
  Shape shape, strides;
};

template <class Managed>
void fill_export(Managed* m, const Tensor& t) {
  auto* ctx = new ExportCtx{t.value(), t.shape(), t.value().strides()};
  m->manager_ctx = ctx;
  DLTensor& d = m->dl_tensor;
  d.data = t.value().raw();
  d.device = {t.device().type == DeviceType::CUDA ? kDLCUDA : kDLCPU, t.device().index};
  d.ndim = t.ndim();
  d.dtype = to_dl(t.dtype());
  d.shape = ctx->shape.data();
  d.strides = ctx->strides.data();
  d.byte_offset = 0;
  m->deleter = [](Managed* self) {
    delete static_cast<ExportCtx*>(self->manager_ctx);
    delete self;
  };
}

py::capsule export_dlpack(const Tensor& t, bool versioned) {
  if (versioned) {
    auto* m = new DLManagedTensorVersioned{};
    m->version = {1, 0};
    m->flags = DLPACK_FLAG_BITMASK_READ_ONLY;  // tensors are immutable values
    fill_export(m, t);
    return py::capsule(m, kVersioned, [](PyObject* cap) {
      // Only a capsule nobody consumed still owns its tensor (consumers rename it to used_*).
      if (PyCapsule_IsValid(cap, kVersioned)) {
        auto* mt = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, kVersioned));
        if (mt && mt->deleter) mt->deleter(mt);
      }
    });
  }
  auto* m = new DLManagedTensor{};
  fill_export(m, t);
  return py::capsule(m, kLegacy, [](PyObject* cap) {
    if (PyCapsule_IsValid(cap, kLegacy)) {
      auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kLegacy));
      if (mt && mt->deleter) mt->deleter(mt);
    }
  });
}

Tensor wrap_dl(const DLTensor& d, std::shared_ptr<void> owner) {
  Device device;
  if (d.device.device_type == kDLCUDA) {
    device = Device{DeviceType::CUDA, d.device.device_id};
    backend_for(device);  // RuntimeError here when this build has no CUDA backend
    if (device.index != 0)
      throw ValueError(str_cat("from_dlpack: the array lives on cuda:", device.index,
                               "; jaclab's CUDA backend uses one GPU, cuda:0 (select it with CUDA_VISIBLE_DEVICES)"));
  } else if (d.device.device_type != kDLCPU) {
    throw ValueError(str_cat("from_dlpack: the array lives on DLPack device type ", d.device.device_type,
                             "; jaclab takes CPU (1) and CUDA (2) arrays"));
  }
  DType dt = from_dl(d.dtype);
  Shape shape(d.shape, d.shape + d.ndim);
  Shape strides = d.strides ? Shape(d.strides, d.strides + d.ndim) : contiguous_strides(shape);
  void* data = static_cast<char*>(d.data) + d.byte_offset;
  return Tensor(Array::from_blob(data, shape, strides, dt, device, std::move(owner)));
}

}  // namespace

Tensor from_dlpack(py::object obj) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  if (!py::hasattr(obj, "__dlpack__"))
    throw TypeError(str_cat("from_dlpack: ", std::string(py::str(py::type::of(obj))), " has no __dlpack__ method"));
  py::object cap_obj;
  try {
    cap_obj = obj.attr("__dlpack__")(py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    cap_obj = obj.attr("__dlpack__")();
  }
  PyObject* cap = cap_obj.ptr();
  if (PyCapsule_IsValid(cap, kVersioned)) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, kVersioned));
    PyCapsule_SetName(cap, "used_dltensor_versioned");
    std::shared_ptr<void> owner(m, [](void* p) {
      auto* mt = static_cast<DLManagedTensorVersioned*>(p);
      py::gil_scoped_acquire gil;  // producers' deleters may touch Python objects
      if (mt->deleter) mt->deleter(mt);
    });
    return wrap_dl(m->dl_tensor, owner);
  }
  if (PyCapsule_IsValid(cap, kLegacy)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kLegacy));
    PyCapsule_SetName(cap, "used_dltensor");
    std::shared_ptr<void> owner(m, [](void* p) {
      auto* mt = static_cast<DLManagedTensor*>(p);
      py::gil_scoped_acquire gil;
      if (mt->deleter) mt->deleter(mt);
    });
    return wrap_dl(m->dl_tensor, owner);
  }
  throw TypeError("from_dlpack: __dlpack__ did not return a DLPack capsule");
}

void bind_dlpack(py::module_& m, py::class_<Tensor>& cls) {
  cls.def("__dlpack__",
          [](const Tensor& t, py::object stream, py::object max_version, py::object dl_device, py::object copy) {
            if (!copy.is_none() && copy.cast<bool>())
              throw py::buffer_error("__dlpack__(copy=True) is not supported; use jl.array(np.array(t))");
            bool versioned = !max_version.is_none() && max_version.cast<py::tuple>()[0].cast<int>() >= 1;
            // jaclab queues GPU work on the legacy default stream; the consumer may read on any stream.
            if (DeviceBackend* be = backend_for(t.device())) be->synchronize();
            return export_dlpack(t, versioned);
          },
          py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
          py::arg("dl_device") = py::none(), py::arg("copy") = py::none());
  cls.def("__dlpack_device__", [](const Tensor& t) {
    return py::make_tuple(t.device().type == DeviceType::CUDA ? int(kDLCUDA) : int(kDLCPU), t.device().index);
  });
  m.def("from_dlpack", &from_dlpack, py::arg("x"), "Zero-copy Tensor from any object with __dlpack__.");
}

}  // namespace jaclab::py_bind
