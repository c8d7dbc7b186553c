// The device-backend registry and the "which device does this op run on" rule.
#include "jaclab/backend.h"

namespace jaclab {
namespace {
DeviceBackend* g_cuda = nullptr;
}

void register_backend(DeviceType type, DeviceBackend* backend) {
  if (type == DeviceType::CUDA) g_cuda = backend;
}

DeviceBackend* registered_backend(DeviceType type) { return type == DeviceType::CUDA ? g_cuda : nullptr; }

DeviceBackend* backend_for(const Device& device) {
  if (device.type == DeviceType::CPU) return nullptr;
  if (!g_cuda)
    throw std::runtime_error(str_cat("a tensor on ", device.str(),
                                     " needs the CUDA backend, which this build of jaclab does not have "
                                     "(jl.cuda_compiled() is False: it was built without a CUDA compiler)"));
  return g_cuda;
}

DeviceBackend* backend_for(const char* op, std::initializer_list<const Array*> operands) {
  const Array* on_device = nullptr;
  for (const Array* a : operands)
    if (a && a->defined() && a->device().type != DeviceType::CPU) {
      on_device = a;
      break;
    }
  if (!on_device) return nullptr;
  for (const Array* a : operands) {
    if (!a || !a->defined() || a->device() == on_device->device()) continue;
    if (a->device().type == DeviceType::CPU && a->ndim() == 0) continue;  // a scalar travels with the op
    throw_value(op, ": operands live on different devices: a ", dtype_name(on_device->dtype()), " tensor of shape ",
                shape_str(on_device->shape()), " on ", on_device->device().str(), " and a ", dtype_name(a->dtype()),
                " tensor of shape ", shape_str(a->shape()), " on ", a->device().str(),
                "; move one with .to(\"", on_device->device().str(), "\") or .to(\"", a->device().str(), "\")");
  }
  return backend_for(on_device->device());
}

}  // namespace jaclab
