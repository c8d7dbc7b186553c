// jaclab._cuda: present only in builds with the CUDA backend.
#include <pybind11/pybind11.h>

#include "device.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.def("info", [] {
    auto d = jaclab::cuda::query();
    py::dict r;
    r["device_count"] = d.device_count;
    r["runtime_version"] = d.runtime_version;
    r["driver_version"] = d.driver_version;
    r["error"] = d.error;
    r["device_name"] = d.name;
    return r;
  });
}
