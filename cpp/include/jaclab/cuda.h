// jaclab's CUDA backend, for C++ programs (target jaclab::cuda, present in builds with CUDA).
// Call register_backend() once; tensors on Device{DeviceType::CUDA, 0} then run every op, rule
// and transform on the GPU (see docs/engine.md, "The CUDA backend"). Nothing here throws on a
// machine without a GPU or driver: query() reports, and tensors on "cuda" raise on first use.
#pragma once
#include <string>

namespace jaclab::cuda {

// Registers the CUDA DeviceBackend with the engine (jaclab/backend.h). Idempotent.
void register_backend();

struct DeviceInfo {
  int device_count = 0;
  int runtime_version = 0;
  int driver_version = 0;
  std::string error;  // why no device is usable, empty when one is
  std::string name;   // device 0
  int multiprocessors = 0;
  int clock_khz = 0;           // max SM clock
  int compute_capability = 0;  // major * 10 + minor
};
DeviceInfo query();

// float32 GEMMs through TF32 tensor cores (off by default: plain FP32).
void set_allow_tf32(bool allow);
bool allow_tf32();
// The cuBLAS library loaded at run time (loads it if needed; throws with the places tried).
const char* cublas_library();

}  // namespace jaclab::cuda
