// CUDA device discovery. Never throws on a machine without a GPU or driver: it reports.
#pragma once
#include <string>

namespace jaclab::cuda {
struct DeviceInfo {
  int device_count = 0;
  int runtime_version = 0;
  int driver_version = 0;
  std::string error;  // why no device is usable, empty when one is
  std::string name;   // device 0
  int multiprocessors = 0;
  int clock_khz = 0;  // max SM clock
  int compute_capability = 0;  // major * 10 + minor
};
DeviceInfo query();
}  // namespace jaclab::cuda
