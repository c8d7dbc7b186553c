#include "jaclab/host_backend.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace jaclab {
namespace {
namespace kn = kernels;

const Device kDev{DeviceType::CUDA, 0};

class HostBackend final : public DeviceBackend {
 public:
  // The same memory seen as a CPU array, and a CPU result tagged as living on the device.
  static Array host(const Array& a) {
    if (!a.defined() || a.device().type == DeviceType::CPU) return a;
    return Array::from_blob(a.raw(), a.shape(), a.strides(), a.dtype(), Device{}, a.storage());
  }
  static Array dev(const Array& a) { return Array::from_blob(a.raw(), a.shape(), a.strides(), a.dtype(), kDev, a.storage()); }

  void* allocate(size_t n, int index) override {
    if (index != 0) throw std::runtime_error("host-emulated CUDA: only cuda:0");
    return std::malloc(n ? n : 1);
  }
  void release(void* p) override { std::free(p); }
  void copy_bytes(void* dst, Device, const void* src, Device, size_t n) override { std::memcpy(dst, src, n); }
  void synchronize() override {}

  void fill(Array& a, double v) override {
    Array h = host(a);
    kn::fill(h, v);
  }
  void copy(const Array& s, Array& d) override {
    Array h = host(d);
    kn::copy(host(s), h);
  }
  Array unary(kn::Unary op, const Array& x, double p) override { return run(kn::unary(op, host(x), p), {&x}); }
  Array binary(kn::Binary op, const Array& a, const Array& b) override {
    return run(kn::binary(op, host(a), host(b)), {&a, &b});
  }
  Array affine(const Array& x, double al, double be) override { return run(kn::affine(host(x), al, be), {&x}); }
  Array sum(const Array& x, const std::vector<int>& axes, bool keep) override {
    return run(kn::sum(host(x), axes, keep), {&x});
  }
  Array max(const Array& x, int axis, bool keep) override { return run(kn::max(host(x), axis, keep), {&x}); }
  Array matmul(const Array& a, const Array& b, const Array* acc) override {
    Array hacc = acc ? host(*acc) : Array();
    return run(kn::matmul(host(a), host(b), acc ? &hacc : nullptr), {&a, &b, acc});
  }
  Array softmax(const Array& x, int axis, bool log) override {
    return run(log ? kn::log_softmax(host(x), axis) : kn::softmax(host(x), axis), {&x});
  }
  Array one_hot(const Array& l, int64_t C, DType dt) override { return run(kn::one_hot(host(l), C, dt), {&l}); }
  Array causal_mask(int64_t T, int64_t S, DType dt, Device) override { return run(kn::causal_mask(T, S, dt), {}); }
  bool all_finite(const Array& x) override {
    run(Array(), {&x});
    return kn::all_finite(host(x));
  }
  Array layer_norm(const Array& x, const Array& g, const Array& b, double eps) override {
    return run(kn::layer_norm(host(x), host(g), host(b), eps), {&x, &g, &b});
  }
  Array attention(const Array& q, const Array& k, const Array& v, bool causal) override {
    return run(kn::attention(host(q), host(k), host(v), causal), {&q, &k, &v});
  }
  bool attention_jvp(const Array&, const Array&, const Array&, const Array*, const Array*, const Array*, bool, Array&,
                     Array&) override {
    return false;  // no fused kernels: the composite rules run (on the device)
  }
  bool attention_vjp(const Array&, const Array&, const Array&, const Array&, const Array&, bool, Array*, Array*,
                     Array*) override {
    return false;
  }

 private:
  // A backend only ever gets arrays on its device (or 0-d CPU scalars): anything else is a bug
  // in the dispatch, which a real GPU would meet as a crash.
  static Array run(const Array& result, std::initializer_list<const Array*> operands) {
    for (const Array* a : operands)
      if (a && a->defined() && a->device() != kDev && !(a->device().type == DeviceType::CPU && a->ndim() == 0))
        throw std::logic_error("host-emulated CUDA: a kernel received an array on " + a->device().str());
    return result.defined() ? dev(result) : result;
  }
};

DeviceBackend* g_saved = nullptr;
bool g_on = false;

}  // namespace

DeviceBackend* host_emulation_backend() {
  static HostBackend b;
  return &b;
}

void emulate_cuda_on_host(bool on) {
  if (on == g_on) return;
  if (on) {
    g_saved = registered_backend(DeviceType::CUDA);
    register_backend(DeviceType::CUDA, host_emulation_backend());
  } else {
    register_backend(DeviceType::CUDA, g_saved);
  }
  g_on = on;
}

bool emulating_cuda_on_host() { return g_on; }

}  // namespace jaclab
