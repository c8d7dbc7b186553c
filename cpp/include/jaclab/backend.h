// Device backends. The CPU kernels (kernels.h) are the reference; a backend for another device
// implements the same kernels, with the same contracts, for arrays that live on that device.
// Every function in kernels.h starts by asking `backend_for` whether its operands live on such a
// device and, if so, hands the call over: ops and autograd never look at devices themselves.
// The CUDA backend (cuda/) registers itself when the Python extension is imported.
#pragma once
#include <cstddef>
#include <vector>

#include "jaclab/kernels.h"

namespace jaclab {

struct DeviceBackend {
  virtual ~DeviceBackend() = default;
  // Memory. `copy_bytes` moves contiguous bytes host<->device or within a device and returns when
  // the copy is done (so a host buffer may be reused or read right after).
  virtual void* allocate(size_t nbytes, int device_index) = 0;
  virtual void release(void* p) = 0;
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  virtual void synchronize() = 0;  // all queued work on the device is done

  // The kernels of kernels.h (operands already checked to be on this backend's device).
  virtual void fill(Array& a, double value) = 0;
  virtual void copy(const Array& src, Array& dst) = 0;
  virtual Array unary(kernels::Unary op, const Array& x, double param) = 0;
  virtual Array binary(kernels::Binary op, const Array& a, const Array& b) = 0;  // one may be a 0-d CPU scalar
  virtual Array affine(const Array& x, double alpha, double beta) = 0;
  virtual Array sum(const Array& x, const std::vector<int>& axes, bool keepdims) = 0;
  virtual Array max(const Array& x, int axis, bool keepdims) = 0;
  virtual Array matmul(const Array& a, const Array& b, const Array* acc) = 0;
  // Whether a sum over leading axes may go through matmul with a row of ones (kernels::sum);
  // not where the GEMM rounds its inputs (TF32).
  virtual bool sums_through_gemm(DType dtype) const { return true; }
  virtual Array softmax(const Array& x, int axis, bool log) = 0;
  virtual Array one_hot(const Array& labels, int64_t num_classes, DType dtype) = 0;
  virtual Array causal_mask(int64_t T, int64_t S, DType dtype, Device device) = 0;
  virtual bool all_finite(const Array& x) = 0;
  virtual Array layer_norm(const Array& x, const Array& g, const Array& b, double eps) = 0;
  virtual Array attention(const Array& q, const Array& k, const Array& v, bool causal) = 0;

  // Fused attention derivatives (see kernels::attention_jvp / attention_vjp). They return false
  // when no fused kernel covers these shapes; the caller then uses the composite rule.
  virtual bool attention_jvp(const Array& q, const Array& k, const Array& v, const Array* dq, const Array* dk,
                             const Array* dv, bool causal, Array& o, Array& o_dot) = 0;
  virtual bool attention_vjp(const Array& q, const Array& k, const Array& v, const Array& o, const Array& g,
                             bool causal, Array* gq, Array* gk, Array* gv) = 0;
  // Fused first-order layer_norm rules (see kernels::layer_norm_jvp / vjp); none by default.
  virtual bool layer_norm_jvp(const Array&, const Array&, const Array*, const Array*, const Array*, double, Array&) {
    return false;
  }
  virtual bool layer_norm_vjp(const Array&, const Array&, const Array&, double, Array*, Array*) { return false; }
};

namespace kernels {
// NumPy matmul shapes, checked (dtype, alignment, batch broadcast): 1-D operands promoted to
// (1, K) / (K, 1); the GEMMs produce out_shape = batch + (M, N), reshaped to final_shape.
struct MatmulShapes {
  Array a, b;  // the operands, 1-D promoted
  int64_t M = 0, K = 0, N = 0;
  Shape batch_a, batch_b, batch, out_shape, final_shape;
};
MatmulShapes matmul_shapes(const Array& a, const Array& b);

// An array read in the index space of `out_shape`, padded on the left to 4 dims (outermost
// first); broadcast dims (size 1 or missing) get stride 0. One loop nest / one index formula
// then serves every rank.
struct Strided4 {
  int64_t n[4];  // sizes
  int64_t s[4];  // strides in elements
};
Strided4 pad4(const Shape& shape, const Shape& strides, const Shape& out_shape);

// How a GEMM reads the last two dims (rows, cols) of `a` in row-major terms: as stored or
// transposed, with leading dimension `ld`; ok = false when neither stride is 1 (copy first).
struct GemmLayout {
  bool ok;
  bool trans;
  int64_t ld;
};
GemmLayout gemm_layout(const Array& a);
}  // namespace kernels

void register_backend(DeviceType type, DeviceBackend* backend);
DeviceBackend* registered_backend(DeviceType type);  // nullptr when none
// nullptr for the CPU; the device's backend otherwise, or a RuntimeError saying why there is none.
DeviceBackend* backend_for(const Device& device);
// The backend for an op's operands: nullptr when all are on the CPU; a ValueError naming the op
// and the devices when they differ. 0-d CPU arrays (scalars) may join operands on any device.
DeviceBackend* backend_for(const char* op, std::initializer_list<const Array*> operands);

}  // namespace jaclab
