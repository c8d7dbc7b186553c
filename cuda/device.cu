#include <cuda_runtime.h>

#include "jaclab/cuda.h"

namespace jaclab::cuda {
DeviceInfo query() {
  DeviceInfo d;
  cudaRuntimeGetVersion(&d.runtime_version);
  cudaDriverGetVersion(&d.driver_version);
  cudaError_t e = cudaGetDeviceCount(&d.device_count);
  if (e != cudaSuccess) {
    d.device_count = 0;
    d.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error
    return d;
  }
  if (d.device_count > 0) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) {
      d.name = p.name;
      d.multiprocessors = p.multiProcessorCount;
      d.compute_capability = p.major * 10 + p.minor;
    }
    cudaDeviceGetAttribute(&d.clock_khz, cudaDevAttrClockRate, 0);
  }
  return d;
}
}  // namespace jaclab::cuda
