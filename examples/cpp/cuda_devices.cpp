// jaclab's CUDA backend from C++: register it, report the device, and where there is one, take a
// gradient on the GPU and compare it with the same gradient on the CPU. Exit code 0 when they
// agree (or when there is no GPU: the build and the registration are what is checked then).
//
//   L(x) = sum(tanh(x W)^2)       x: (4, 3), W: (3, 5), float64
#include <cmath>
#include <cstdio>

#include "jaclab/cuda.h"
#include "jaclab/ops.h"
#include "jaclab/transforms.h"

using namespace jaclab;

int main() {
  cuda::register_backend();
  const cuda::DeviceInfo info = cuda::query();
  std::printf("CUDA runtime %d, driver %d, %d device(s)%s%s\n", info.runtime_version, info.driver_version,
              info.device_count, info.device_count ? ": " : "", info.name.c_str());
  if (info.device_count == 0) {
    std::printf("no GPU here (%s): nothing to run on it\n", info.error.c_str());
    return 0;
  }
  const Device gpu{DeviceType::CUDA, 0};
  Tensor x = full({4, 3}, DType::Float64, 0.3), W = full({3, 5}, DType::Float64, -0.7);
  auto loss = [](const TensorList& p) { return TensorList{sum(square(tanh(matmul(p[0], p[1]))))}; };
  TensorList g_cpu = grad(loss, {x, W});
  TensorList g_gpu = grad(loss, {to(x, gpu), to(W, gpu)});
  double worst = 0;
  for (size_t i = 0; i < 2; ++i) {
    Array a = g_cpu[i].value(), b = to(g_gpu[i], Device{}).value();
    for (int64_t j = 0; j < a.numel(); ++j) worst = std::fmax(worst, std::fabs(a.data<double>()[j] - b.data<double>()[j]));
  }
  std::printf("gradient on %s vs CPU: max difference %.2e\n", info.name.c_str(), worst);
  return worst < 1e-12 ? 0 : 1;
}
