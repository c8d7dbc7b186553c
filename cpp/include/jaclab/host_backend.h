// A stand-in for a GPU, for testing device code on machines without one: arrays tagged "cuda:0"
// whose memory is host memory, on which the CPU kernels run. Every kernel call still goes through
// the device dispatch (jaclab/backend.h), so code that would leave the device, mix devices or
// build a constant on the wrong one fails the same way it would on a GPU. No fused attention
// kernels (the composite rules run). Not a way to compute: it is as fast as the CPU path.
#pragma once
#include "jaclab/backend.h"

namespace jaclab {

DeviceBackend* host_emulation_backend();
// Register the stand-in for DeviceType::CUDA (true) or put back what was registered before (false).
void emulate_cuda_on_host(bool on);
bool emulating_cuda_on_host();

}  // namespace jaclab
