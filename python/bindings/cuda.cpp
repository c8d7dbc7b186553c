// CUDA build facts and switches (_core._cuda_*). Present in every build; without the CUDA backend
// they report that it is missing.
#include "common.h"
#include "jaclab/host_backend.h"

#ifdef JACLAB_WITH_CUDA
#include "jaclab/cuda.h"
#endif

namespace jaclab::py_bind {

void bind_cuda(py::module_& m) {
#ifdef JACLAB_WITH_CUDA
  jaclab::cuda::register_backend();
  m.attr("_cuda_compiled") = true;
  m.def("_cuda_info", [] {
    auto d = jaclab::cuda::query();
    py::dict r;
    r["device_count"] = d.device_count;
    r["runtime_version"] = d.runtime_version;
    r["driver_version"] = d.driver_version;
    r["error"] = d.error;
    r["device_name"] = d.name;
    r["multiprocessors"] = d.multiprocessors;
    r["clock_khz"] = d.clock_khz;
    r["compute_capability"] = d.compute_capability;
    return r;
  });
  m.def("_cuda_set_allow_tf32", &jaclab::cuda::set_allow_tf32);
  m.def("_cuda_allow_tf32", &jaclab::cuda::allow_tf32);
  m.def("_cublas_library", [] { return std::string(jaclab::cuda::cublas_library()); });
#else
  m.attr("_cuda_compiled") = false;
#endif
  // Tests of device code without a GPU: "cuda:0" arrays in host memory (jaclab/host_backend.h).
  m.def("_emulate_cuda_on_host", &emulate_cuda_on_host, py::arg("on"));
  m.def("_emulating_cuda_on_host", &emulating_cuda_on_host);
  m.def("_cuda_synchronize", [] {
    if (DeviceBackend* be = backend_for(Device{DeviceType::CUDA, 0})) be->synchronize();
  });
}

}  // namespace jaclab::py_bind
