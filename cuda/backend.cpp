// The CUDA backend: the kernels.h contracts for arrays on a CUDA device. Shape logic lives here
// (host code); the arithmetic is in kernels.cu, attention.cu and cuBLAS (cublas.cpp).
// Everything runs on the legacy default stream, so work is ordered with cudaMemcpy, with CuPy's
// default stream and with the next op without extra synchronisation.
#include "jaclab/cuda.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "attention.h"
#include "cublas.h"
#include "jaclab/backend.h"
#include "kernels.h"

namespace jaclab::cuda {
namespace {

using kernels::pad4;
Strided strided(const Array& a) { return pad4(a.shape(), a.strides(), a.shape()); }

void require_float(const Array& x, const char* op) {
  if (!is_float(x.dtype())) throw_type(op, ": expected a float32 or float64 tensor, got ", dtype_name(x.dtype()));
}

// `x` with `axes` moved last (in order), contiguous; rows = product of the other dims.
Array axes_last(const Array& x, const std::vector<bool>& moved) {
  std::vector<int> perm;
  for (int i = 0; i < x.ndim(); ++i)
    if (!moved[i]) perm.push_back(i);
  for (int i = 0; i < x.ndim(); ++i)
    if (moved[i]) perm.push_back(i);
  return x.permute_view(perm).contiguous();
}

class CudaBackend final : public DeviceBackend {
 public:
  void* allocate(size_t nbytes, int device_index) override {
    select(device_index);
    void* p = nullptr;
    // The device's stream-ordered pool caches freed blocks (release threshold raised in `init`).
    check(cudaMallocAsync(&p, nbytes ? nbytes : 1, nullptr), "cudaMallocAsync");
    return p;
  }
  void release(void* p) override { cudaFreeAsync(p, nullptr); }  // never throws from a destructor
  void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n) override {
    if (n == 0) return;
    cudaMemcpyKind kind = dd.type == DeviceType::CPU   ? cudaMemcpyDeviceToHost
                          : sd.type == DeviceType::CPU ? cudaMemcpyHostToDevice
                                                       : cudaMemcpyDeviceToDevice;
    check(cudaMemcpy(dst, src, n, kind), "cudaMemcpy");
  }
  void synchronize() override { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

  void fill(Array& a, double value) override {
    if (!a.is_contiguous()) throw_value("fill: needs a contiguous array");
    cuda::fill(a.dtype(), a.raw(), a.numel(), value);
  }
  void copy(const Array& src, Array& dst) override {
    cuda::copy(src.dtype(), src.raw(), pad4(src.shape(), src.strides(), dst.shape()), dst.dtype(), dst.raw(),
               strided(dst));
  }
  Array unary(kernels::Unary op, const Array& x, double param) override {
    require_float(x, "unary op");
    Array xc = x.contiguous(), y = Array::empty(x.shape(), x.dtype(), x.device());
    cuda::unary(op, x.dtype(), xc.raw(), y.raw(), y.numel(), param);
    return y;
  }
  Array binary(kernels::Binary op, const Array& a, const Array& b) override {
    // No kernel of its own on the GPU yet: the two tested ones it is made of.
    if (op == kernels::Binary::MulOneMinusSquare)
      return binary(kernels::Binary::Mul, a, unary(kernels::Unary::OneMinusSquare, b, 0.0));
    if (a.dtype() != b.dtype())
      throw_type("binary op: dtype mismatch, ", dtype_name(a.dtype()), " vs ", dtype_name(b.dtype()));
    require_float(a, "binary op");
    const Device dev = a.device().type == DeviceType::CUDA ? a.device() : b.device();
    // A 0-d CPU operand is a scalar argument to the kernel, not a transfer.
    if (a.device().type == DeviceType::CPU || b.device().type == DeviceType::CPU) {
      const bool scalar_first = a.device().type == DeviceType::CPU;
      const Array& s = scalar_first ? a : b;
      Array t = (scalar_first ? b : a).contiguous();
      Array y = Array::empty(t.shape(), t.dtype(), dev);
      cuda::binary_scalar(op, t.dtype(), t.raw(), s.item(), scalar_first, y.raw(), y.numel());
      return y;
    }
    Shape out_shape = broadcast_shapes(a.shape(), b.shape(), "binary op");
    Array y = Array::empty(out_shape, a.dtype(), dev);
    cuda::binary(op, a.dtype(), a.raw(), pad4(a.shape(), a.strides(), out_shape), b.raw(),
                 pad4(b.shape(), b.strides(), out_shape), y.raw(), strided(y));
    return y;
  }
  Array affine(const Array& x, double alpha, double beta) override {
    require_float(x, "affine");
    Array xc = x.contiguous(), y = Array::empty(x.shape(), x.dtype(), x.device());
    cuda::affine(x.dtype(), xc.raw(), y.raw(), y.numel(), alpha, beta);
    return y;
  }
  Array sum(const Array& x, const std::vector<int>& axes, bool keepdims) override {
    require_float(x, "sum");
    std::vector<bool> red(x.ndim(), false);
    for (int a : axes) red[normalize_axis(a, x.ndim(), "sum")] = true;
    Shape kshape = x.shape(), rshape;
    int64_t n_red = 1;
    for (int i = 0; i < x.ndim(); ++i)
      if (red[i]) {
        kshape[i] = 1;
        n_red *= x.shape()[i];
      } else {
        rshape.push_back(x.shape()[i]);
      }
    Array out = Array::empty(kshape, x.dtype(), x.device());
    const int64_t kept = numel_of(kshape);
    // Every case works here (reduced axes moved last, one block per row); kernels::sum sends the
    // common large ones elsewhere first: leading axes as one GEMM with a row of ones (unless TF32
    // would round it), and a full sum of a large array in two stages.
    if (n_red == 0) {
      cuda::fill(x.dtype(), out.raw(), kept, 0.0);
    } else {
      Array xt = axes_last(x, red);
      cuda::reduce_rows(Reduce::Sum, x.dtype(), xt.raw(), out.raw(), kept, n_red);
    }
    return keepdims ? out : out.reshape_view(rshape);
  }
  Array max(const Array& x, int axis, bool keepdims) override {
    require_float(x, "max");
    std::vector<bool> red(x.ndim(), false);
    red[axis] = true;
    Array xt = axes_last(x, red);
    Shape ks = x.shape();
    ks[axis] = 1;
    Array out = Array::empty(ks, x.dtype(), x.device());
    const int64_t n = x.shape()[axis];
    cuda::reduce_rows(Reduce::Max, x.dtype(), xt.raw(), out.raw(), n ? xt.numel() / n : 0, n);
    if (keepdims) return out;
    Shape s = x.shape();
    s.erase(s.begin() + axis);
    return out.reshape_view(s);
  }

  Array matmul(const Array& a_in, const Array& b_in, const Array* acc) override {
    kernels::MatmulShapes ms = kernels::matmul_shapes(a_in, b_in);
    Array a = ms.a, b = ms.b;
    int64_t M = ms.M, K = ms.K, N = ms.N;
    Shape batch = ms.batch;
    Array out;
    if (acc) {
      if (acc->dtype() != a.dtype())
        throw_type("addmm: dtype mismatch, ", dtype_name(acc->dtype()), " vs ", dtype_name(a.dtype()));
      out = acc->broadcast_view(ms.final_shape).clone().reshape_view(ms.out_shape);
    } else {
      out = Array::empty(ms.out_shape, a.dtype(), a.device());
    }
    if (M == 0 || N == 0) return out.reshape_view(ms.final_shape);
    if (K == 0) {
      if (!acc) cuda::fill(out.dtype(), out.raw(), out.numel(), 0.0);
      return out.reshape_view(ms.final_shape);
    }
    int64_t nbatch = numel_of(batch);
    // (..., M, K) @ (K, N) with a contiguous `a` is one GEMM of (batch*M, K) @ (K, N).
    if (numel_of(ms.batch_b) == 1 && nbatch > 1 && a.is_contiguous() && numel_of(ms.batch_a) == nbatch) {
      M *= nbatch;
      nbatch = 1;
      batch = Shape{};
      a = a.reshape_view({M, K});
      b = b.ndim() > 2 ? b.contiguous().reshape_view({K, N}) : b;
    }
    Operand A = operand(a, batch), B = operand(b, batch);
    cuda::gemm(a.dtype(), A.trans, B.trans, M, N, K, A.array.raw(), A.ld, A.stride, B.array.raw(), B.ld, B.stride,
               out.raw(), nbatch, acc != nullptr);
    return out.reshape_view(ms.final_shape);
  }

  bool sums_through_gemm(DType dtype) const override { return dtype == DType::Float64 || !tf32_enabled(); }

  Array softmax(const Array& x, int axis, bool log) override {
    const char* op = log ? "log_softmax" : "softmax";
    require_float(x, op);
    if (x.ndim() == 0) throw_value(op, ": needs at least a 1-d tensor");
    std::vector<bool> moved(x.ndim(), false);
    moved[axis] = true;
    Array xt = axes_last(x, moved);
    Array yt = Array::empty(xt.shape(), x.dtype(), x.device());
    const int64_t n = x.shape()[axis];
    cuda::softmax_rows(x.dtype(), xt.raw(), yt.raw(), n ? xt.numel() / n : 0, n, log);
    if (axis == x.ndim() - 1) return yt;
    std::vector<int> perm, inv(x.ndim());
    for (int i = 0; i < x.ndim(); ++i)
      if (i != axis) perm.push_back(i);
    perm.push_back(axis);
    for (int i = 0; i < x.ndim(); ++i) inv[perm[i]] = i;
    return yt.permute_view(inv).contiguous();
  }
  Array one_hot(const Array& labels, int64_t num_classes, DType dtype) override {
    if (labels.dtype() != DType::Int64) throw_type("one_hot: labels must be int64, got ", dtype_name(labels.dtype()));
    Array host = labels.to(Device{}).contiguous();  // labels are small; check them where errors are cheap
    const int64_t* l = host.data<int64_t>();
    for (int64_t i = 0, n = host.numel(); i < n; ++i)
      if (l[i] < 0 || l[i] >= num_classes)
        throw_value("cross_entropy: label ", l[i], " at position ", i, " is outside [0, ", num_classes, ")");
    Shape s = labels.shape();
    s.push_back(num_classes);
    Array out = Array::zeros(s, dtype, labels.device());
    Array lc = labels.contiguous();
    cuda::one_hot(dtype, lc.data<int64_t>(), out.raw(), lc.numel(), num_classes);
    return out;
  }
  Array causal_mask(int64_t T, int64_t S, DType dtype, Device device) override {
    Array m = Array::empty({T, S}, dtype, device);
    cuda::causal_mask(dtype, m.raw(), T, S);
    return m;
  }
  bool all_finite(const Array& x) override {
    Array xc = x.contiguous();
    return cuda::all_finite(x.dtype(), xc.raw(), xc.numel());
  }
  Array layer_norm(const Array& x_in, const Array& g_in, const Array& b_in, double eps) override {
    Array x = x_in.contiguous(), g = g_in.contiguous(), b = b_in.contiguous();
    Array y = Array::empty(x.shape(), x.dtype(), x.device());
    const int64_t d = x.shape().back();
    cuda::layer_norm_rows(x.dtype(), x.raw(), g.raw(), b.raw(), y.raw(), d ? x.numel() / d : 0, d, eps);
    return y;
  }

  // ---- attention: fused kernels when the head sizes have one, the composition otherwise -----
  Array attention(const Array& q_in, const Array& k_in, const Array& v_in, bool causal) override {
    Fused f = fused(q_in, k_in, v_in);
    if (!f.ok) {  // scores in memory: (T, S) per slice
      const int n = q_in.ndim();
      std::vector<int> perm;
      for (int i = 0; i < n; ++i) perm.push_back(i);
      std::swap(perm[n - 1], perm[n - 2]);
      Array s = affine(matmul(q_in, k_in.permute_view(perm), nullptr), 1.0 / std::sqrt(double(q_in.shape()[n - 1])), 0);
      if (causal) s = binary(kernels::Binary::Add, s, causal_mask(s.shape()[n - 2], s.shape()[n - 1], s.dtype(), s.device()));
      return matmul(softmax(s, n - 1, false), v_in, nullptr);
    }
    Array o = Array::empty(f.out_shape, f.q.dtype(), f.q.device());
    dispatch(f.q.dtype(), [&](auto z) {
      using T = decltype(z);
      cuda::attention_forward<T>(f.q.data<T>(), f.k.data<T>(), f.v.data<T>(), o.data<T>(), nullptr, f.BH, f.T, f.S, f.dh,
                           f.dv, causal, nullptr);
    });
    return o;
  }
  bool attention_jvp(const Array& q, const Array& k, const Array& v, const Array* dq, const Array* dk, const Array* dv,
                     bool causal, Array& o, Array& o_dot) override {
    Fused f = fused(q, k, v);
    if (!f.ok) return false;
    Array tq = dq ? dq->contiguous() : Array(), tk = dk ? dk->contiguous() : Array(), tv = dv ? dv->contiguous() : Array();
    if ((dq && tq.shape() != q.shape()) || (dk && tk.shape() != k.shape()) || (dv && tv.shape() != v.shape()))
      return false;  // broadcast tangents: leave them to the composite rule
    o = Array::empty(f.out_shape, q.dtype(), q.device());
    o_dot = Array::empty(f.out_shape, q.dtype(), q.device());
    dispatch(q.dtype(), [&](auto z) {
      using T = decltype(z);
      cuda::attention_jvp<T>(f.q.data<T>(), f.k.data<T>(), f.v.data<T>(), dq ? tq.data<T>() : nullptr,
                       dk ? tk.data<T>() : nullptr, dv ? tv.data<T>() : nullptr, o.data<T>(), o_dot.data<T>(), f.BH,
                       f.T, f.S, f.dh, f.dv, causal, nullptr);
    });
    return true;
  }
  bool attention_vjp(const Array& q, const Array& k, const Array& v, const Array& o_in, const Array& g_in, bool causal,
                     Array* gq, Array* gk, Array* gv) override {
    Fused f = fused(q, k, v);
    if (!f.ok || g_in.shape() != f.out_shape) return false;
    Array g = g_in.contiguous();
    // The log-sum-exp rows come from a forward pass (recomputed: the op does not keep them).
    Array o = Array::empty(f.out_shape, q.dtype(), q.device());
    Shape lse_shape(f.out_shape.begin(), f.out_shape.end() - 1);
    Array lse = Array::empty(lse_shape, q.dtype(), q.device());
    if (gq) *gq = Array::empty(q.shape(), q.dtype(), q.device());
    if (gk) *gk = Array::empty(k.shape(), q.dtype(), q.device());
    if (gv) *gv = Array::empty(v.shape(), q.dtype(), q.device());
    dispatch(q.dtype(), [&](auto z) {
      using T = decltype(z);
      cuda::attention_forward<T>(f.q.data<T>(), f.k.data<T>(), f.v.data<T>(), o.data<T>(), lse.data<T>(), f.BH, f.T, f.S,
                           f.dh, f.dv, causal, nullptr);
      cuda::attention_backward<T>(f.q.data<T>(), f.k.data<T>(), f.v.data<T>(), o.data<T>(), lse.data<T>(), g.data<T>(),
                            gq ? gq->data<T>() : nullptr, gk ? gk->data<T>() : nullptr, gv ? gv->data<T>() : nullptr,
                            f.BH, f.T, f.S, f.dh, f.dv, causal, nullptr);
    });
    return true;
  }

 private:
  struct Operand {
    Array array;
    bool trans;
    int64_t ld, stride;
  };
  // How cuBLAS reads a (batch..., rows, cols) operand: a transpose flag, a leading dimension and one
  // batch stride (0 when broadcast). Anything else is first made contiguous.
  static Operand operand(Array a, const Shape& batch) {
    const int nd = a.ndim();
    int64_t prod = 1;  // this operand's own batch size
    for (int i = 0; i < nd - 2; ++i) prod *= a.shape()[i];
    if (prod != 1 && prod != numel_of(batch)) {  // partly broadcast: materialise the full batch
      Shape full = batch;
      full.push_back(a.shape()[nd - 2]);
      full.push_back(a.shape()[nd - 1]);
      a = a.broadcast_view(full).contiguous();
      return operand(a, batch);
    }
    for (int attempt = 0; attempt < 2; ++attempt, a = a.contiguous()) {
      const int n = a.ndim();
      const kernels::GemmLayout layout = kernels::gemm_layout(a);  // the CPU path's rule
      if (!layout.ok) continue;
      Operand op{a, layout.trans, layout.ld, 0};
      if (prod == 1) return op;  // batch stride 0: every product reads the same matrix
      // The batch dims (size-1 ones aside) must collapse to one stride.
      int64_t stride = -1, span = 1;
      bool uniform = true;
      for (int i = n - 3; i >= 0; --i) {
        if (a.shape()[i] == 1) continue;
        if (stride < 0) stride = a.strides()[i];
        else uniform &= a.strides()[i] == stride * span;
        span *= a.shape()[i];
      }
      if (!uniform) continue;
      op.stride = stride;
      return op;
    }
    throw std::runtime_error("matmul (CUDA): could not lay out an operand for cuBLAS");
  }

  struct Fused {
    bool ok = false;
    Array q, k, v;
    Shape out_shape;
    int64_t BH = 0, T = 0, S = 0;
    int dh = 0, dv = 0;
  };
  static Fused fused(const Array& q, const Array& k, const Array& v) {
    Fused f;
    const int n = q.ndim();
    f.out_shape = q.shape();
    f.out_shape.back() = v.shape()[n - 1];
    f.T = q.shape()[n - 2];
    f.S = k.shape()[n - 2];
    f.dh = static_cast<int>(q.shape()[n - 1]);
    f.dv = static_cast<int>(v.shape()[n - 1]);
    f.BH = f.T * f.dh ? q.numel() / (f.T * f.dh) : 0;
    if (!attention_supported(f.dh, f.dv) || f.T == 0 || f.S == 0 || f.BH == 0) return f;
    f.q = q.contiguous();
    f.k = k.contiguous();
    f.v = v.contiguous();
    f.ok = true;
    return f;
  }
  template <class F>
  static void dispatch(DType dt, F&& f) {
    if (dt == DType::Float32) f(float{});
    else f(double{});
  }
  static void select(int index) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaError_t e = cudaGetLastError();
      throw std::runtime_error(std::string("no usable CUDA device for a tensor on cuda:") + std::to_string(index) +
                               " (" + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                               "); jl.cuda_available() tells whether there is one");
    }
    if (index < 0 || index >= count)
      throw std::runtime_error("cuda:" + std::to_string(index) + " does not exist: this machine has " +
                               std::to_string(count) + " CUDA device(s)");
    // Kernels run on the current device and nothing switches it per op: one GPU only.
    if (index != 0)
      throw std::runtime_error("cuda:" + std::to_string(index) + ": jaclab's CUDA backend uses one GPU, cuda:0 "
                               "(select another with CUDA_VISIBLE_DEVICES)");
    int current = 0;
    check(cudaGetDevice(&current), "cudaGetDevice");
    if (current != index) check(cudaSetDevice(index), "cudaSetDevice");
  }
};

}  // namespace

void register_backend() {
  static CudaBackend backend;
  static bool done = false;
  if (done) return;
  done = true;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // no device: clear the error; tensors on "cuda" then fail with a clear message
  } else {
    // Keep freed blocks in the stream-ordered pool instead of returning them to the driver.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    }
  }
  jaclab::register_backend(DeviceType::CUDA, &backend);
}

}  // namespace jaclab::cuda
