// CUDA kernels for the elementwise, reduction, softmax and normalisation ops. Each mirrors a CPU
// loop in cpp/src/kernels_cpu.cpp (the reference); the formulas are kept identical, including the
// choices at kinks (relu'(0) = 0) and for fully masked softmax rows.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace jaclab::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));  // grid-stride loops cover the rest
}

#define JL_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

__device__ inline int64_t offset_of(const Strided& d, int64_t i) {
  int64_t off = 0;
  for (int k = 3; k >= 0; --k) {
    off += (i % d.n[k]) * d.s[k];
    i /= d.n[k];
  }
  return off;
}

template <class F>
void dispatch_float(DType dt, F&& f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::Float64) f(double{});
  else throw std::runtime_error("CUDA kernel: expected a float32 or float64 array");
}

template <class F>
void dispatch_all(DType dt, F&& f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::Float64) f(double{});
  else f(int64_t{});
}

void check_launch(const char* what) { check(cudaGetLastError(), what); }

// ---- elementwise ----------------------------------------------------------------------------
template <class T>
__global__ void fill_kernel(T* y, int64_t n, T v) {
  JL_GRID_LOOP(i, n) y[i] = v;
}

template <class Out, class In>
__global__ void copy_kernel(const In* x, Strided xs, Out* y, Strided ys, int64_t n) {
  JL_GRID_LOOP(i, n) y[offset_of(ys, i)] = static_cast<Out>(x[offset_of(xs, i)]);
}

template <class T>
__device__ inline T apply_unary(kernels::Unary op, T x, T p) {
  using kernels::Unary;
  const T kSqrt1_2 = T(0.70710678118654752440), kSqrt2OverPi = T(0.79788456080286535588),
          kInvSqrt2Pi = T(0.39894228040143267794);
  switch (op) {
    case Unary::Neg: return -x;
    case Unary::Exp: return exp(x);
    case Unary::Log: return log(x);
    case Unary::Tanh: return tanh(x);
    case Unary::Sigmoid: return x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
    case Unary::Relu: return x > 0 ? x : T(0);
    case Unary::Step: return x > 0 ? T(1) : T(0);  // relu'(0) := 0, as on the CPU
    case Unary::Erf: return erf(x);
    case Unary::Gelu: return T(0.5) * x * (T(1) + erf(x * kSqrt1_2));
    case Unary::GeluTanh: return T(0.5) * x * (T(1) + tanh(kSqrt2OverPi * (x + T(0.044715) * x * x * x)));
    case Unary::Softplus: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    case Unary::Pow: return p == T(2) ? x * x : pow(x, p);
    case Unary::Sqrt: return sqrt(x);
    case Unary::Square: return x * x;
    case Unary::Abs: return fabs(x);
    case Unary::Sign: return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);
    case Unary::GeluGrad: return T(0.5) * (T(1) + erf(x * kSqrt1_2)) + x * kInvSqrt2Pi * exp(T(-0.5) * x * x);
    case Unary::OneMinusSquare: return T(1) - x * x;
  }
  return x;
}

template <class T>
__global__ void unary_kernel(kernels::Unary op, const T* x, T* y, int64_t n, T p) {
  JL_GRID_LOOP(i, n) y[i] = apply_unary(op, x[i], p);
}

template <class T>
__device__ inline T apply_binary(kernels::Binary op, T a, T b) {
  switch (op) {
    case kernels::Binary::Add: return a + b;
    case kernels::Binary::Sub: return a - b;
    case kernels::Binary::Mul: return a * b;
    case kernels::Binary::Div: return a / b;
  }
  return a;
}

template <class T>
__global__ void binary_same_kernel(kernels::Binary op, const T* a, const T* b, T* y, int64_t n) {
  JL_GRID_LOOP(i, n) y[i] = apply_binary(op, a[i], b[i]);
}

template <class T>
__global__ void binary_strided_kernel(kernels::Binary op, const T* a, Strided as, const T* b, Strided bs, T* y,
                                      int64_t n) {
  JL_GRID_LOOP(i, n) y[i] = apply_binary(op, a[offset_of(as, i)], b[offset_of(bs, i)]);
}

template <class T>
__global__ void binary_scalar_kernel(kernels::Binary op, const T* a, T s, bool scalar_first, T* y, int64_t n) {
  JL_GRID_LOOP(i, n) y[i] = scalar_first ? apply_binary(op, s, a[i]) : apply_binary(op, a[i], s);
}

template <class T>
__global__ void affine_kernel(const T* x, T* y, int64_t n, T alpha, T beta) {
  JL_GRID_LOOP(i, n) y[i] = alpha * x[i] + beta;
}

// ---- row reductions: one block per row, a shared-memory tree for the partial results -------
template <class A, class Op>
__device__ A block_reduce(A v, Op op, A* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  A r = shared[0];
  __syncthreads();  // `shared` may be reused right after
  return r;
}

struct SumOp {
  template <class A>
  __device__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {
  template <class A>
  __device__ A operator()(A a, A b) const { return a > b ? a : b; }
};

template <class T>
__global__ void row_sum_kernel(const T* x, T* y, int64_t rows, int64_t n) {
  __shared__ double sh[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    double acc = 0;  // rows accumulate in double, as on the CPU
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += x[r * n + j];
    acc = block_reduce(acc, SumOp{}, sh);
    if (threadIdx.x == 0) y[r] = static_cast<T>(acc);
  }
}

template <class T>
__global__ void row_max_kernel(const T* x, T* y, int64_t rows, int64_t n) {
  __shared__ T sh[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T m = T(-INFINITY);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmax(m, x[r * n + j]);
    m = block_reduce(m, MaxOp{}, sh);
    if (threadIdx.x == 0) y[r] = m;
  }
}

template <class T>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log_out) {
  __shared__ double sh[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    double m = double(-INFINITY);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmax(m, double(xr[j]));
    m = block_reduce(m, MaxOp{}, sh);
    if (isinf(m) && m < 0) m = 0;  // fully masked row: avoid inf - inf (as on the CPU)
    const T mt = static_cast<T>(m);
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp(double(xr[j] - mt));
    s = block_reduce(s, SumOp{}, sh);
    if (log_out) {
      const T lse = mt + static_cast<T>(log(s));
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - lse;
    } else {
      const T inv = static_cast<T>(s > 0 ? 1.0 / s : 0.0);  // a fully masked row has no mass: zeros (as on the CPU)
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = exp(xr[j] - mt) * inv;
    }
  }
}

template <class T>
__global__ void layer_norm_kernel(const T* x, const T* g, const T* b, T* y, int64_t rows, int64_t d, double eps) {
  __shared__ double sh[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    double mu = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) mu += xr[j];
    mu = block_reduce(mu, SumOp{}, sh) / d;
    double var = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) var += (xr[j] - mu) * (xr[j] - mu);
    var = block_reduce(var, SumOp{}, sh) / d;
    const T rstd = static_cast<T>(1.0 / sqrt(var + eps)), mut = static_cast<T>(mu);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) y[r * d + j] = (xr[j] - mut) * rstd * g[j] + b[j];
  }
}

template <class T>
__global__ void one_hot_kernel(const int64_t* labels, T* y, int64_t n, int64_t C) {
  JL_GRID_LOOP(i, n) y[i * C + labels[i]] = T(1);
}

template <class T>
__global__ void causal_mask_kernel(T* y, int64_t T_, int64_t S) {
  JL_GRID_LOOP(i, T_ * S) {
    const int64_t t = i / S, s = i % S;
    y[i] = s <= t + (S - T_) ? T(0) : T(-INFINITY);
  }
}

template <class T>
__global__ void all_finite_kernel(const T* x, int64_t n, int* bad) {
  JL_GRID_LOOP(i, n) if (!isfinite(x[i])) *bad = 1;
}

int row_blocks(int64_t rows) { return static_cast<int>(rows < 1 ? 1 : (rows > 65535 * 16 ? 65535 * 16 : rows)); }

}  // namespace

void check(int err, const char* what) {
  if (err != cudaSuccess) {
    auto e = static_cast<cudaError_t>(err);
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
  }
}

void fill(DType dt, void* y, int64_t n, double value) {
  if (n == 0) return;
  if (value == 0.0) return check(cudaMemsetAsync(y, 0, n * dtype_size(dt), 0), "fill (cudaMemsetAsync)");
  dispatch_all(dt, [&](auto z) {
    using T = decltype(z);
    fill_kernel<T><<<blocks_for(n), kThreads>>>(static_cast<T*>(y), n, static_cast<T>(value));
  });
  check_launch("fill");
}

void copy(DType xt, const void* x, const Strided& xs, DType yt, void* y, const Strided& ys) {
  const int64_t n = ys.n[0] * ys.n[1] * ys.n[2] * ys.n[3];
  if (n == 0) return;
  dispatch_all(yt, [&](auto zo) {
    dispatch_all(xt, [&](auto zi) {
      using Out = decltype(zo);
      using In = decltype(zi);
      copy_kernel<Out, In><<<blocks_for(n), kThreads>>>(static_cast<const In*>(x), xs, static_cast<Out*>(y), ys, n);
    });
  });
  check_launch("copy");
}

void unary(kernels::Unary op, DType dt, const void* x, void* y, int64_t n, double param) {
  if (n == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    unary_kernel<T><<<blocks_for(n), kThreads>>>(op, static_cast<const T*>(x), static_cast<T*>(y), n, T(param));
  });
  check_launch("unary op");
}

void binary(kernels::Binary op, DType dt, const void* a, const Strided& as, const void* b, const Strided& bs, void* y,
            const Strided& out) {
  const int64_t n = out.n[0] * out.n[1] * out.n[2] * out.n[3];
  if (n == 0) return;
  auto contiguous = [&](const Strided& s) {
    int64_t acc = 1;
    for (int k = 3; k >= 0; --k) {
      if (s.n[k] != 1 && s.s[k] != acc) return false;
      acc *= s.n[k];
    }
    return true;
  };
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    auto A = static_cast<const T*>(a);
    auto B = static_cast<const T*>(b);
    auto Y = static_cast<T*>(y);
    if (contiguous(as) && contiguous(bs))
      binary_same_kernel<T><<<blocks_for(n), kThreads>>>(op, A, B, Y, n);
    else
      binary_strided_kernel<T><<<blocks_for(n), kThreads>>>(op, A, as, B, bs, Y, n);
  });
  check_launch("binary op");
}

void binary_scalar(kernels::Binary op, DType dt, const void* a, double s, bool scalar_first, void* y, int64_t n) {
  if (n == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    binary_scalar_kernel<T><<<blocks_for(n), kThreads>>>(op, static_cast<const T*>(a), T(s), scalar_first,
                                                         static_cast<T*>(y), n);
  });
  check_launch("binary op (scalar)");
}

void affine(DType dt, const void* x, void* y, int64_t n, double alpha, double beta) {
  if (n == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    affine_kernel<T><<<blocks_for(n), kThreads>>>(static_cast<const T*>(x), static_cast<T*>(y), n, T(alpha), T(beta));
  });
  check_launch("affine");
}

void reduce_rows(Reduce r, DType dt, const void* x, void* y, int64_t rows, int64_t n) {
  if (rows == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    if (r == Reduce::Sum)
      row_sum_kernel<T><<<row_blocks(rows), kThreads>>>(static_cast<const T*>(x), static_cast<T*>(y), rows, n);
    else
      row_max_kernel<T><<<row_blocks(rows), kThreads>>>(static_cast<const T*>(x), static_cast<T*>(y), rows, n);
  });
  check_launch(r == Reduce::Sum ? "sum" : "max");
}

void softmax_rows(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    softmax_kernel<T><<<row_blocks(rows), kThreads>>>(static_cast<const T*>(x), static_cast<T*>(y), rows, n, log);
  });
  check_launch(log ? "log_softmax" : "softmax");
}

void layer_norm_rows(DType dt, const void* x, const void* g, const void* b, void* y, int64_t rows, int64_t d,
                     double eps) {
  if (rows == 0 || d == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    layer_norm_kernel<T><<<row_blocks(rows), kThreads>>>(static_cast<const T*>(x), static_cast<const T*>(g),
                                                         static_cast<const T*>(b), static_cast<T*>(y), rows, d, eps);
  });
  check_launch("layer_norm");
}

void one_hot(DType dt, const int64_t* labels, void* y, int64_t n, int64_t num_classes) {
  if (n == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    one_hot_kernel<T><<<blocks_for(n), kThreads>>>(labels, static_cast<T*>(y), n, num_classes);
  });
  check_launch("one_hot");
}

void causal_mask(DType dt, void* y, int64_t T_, int64_t S) {
  if (T_ * S == 0) return;
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    causal_mask_kernel<T><<<blocks_for(T_ * S), kThreads>>>(static_cast<T*>(y), T_, S);
  });
  check_launch("causal_mask");
}

bool all_finite(DType dt, const void* x, int64_t n) {
  if (n == 0 || dt == DType::Int64) return true;
  int* bad = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&bad), sizeof(int), 0), "all_finite (cudaMallocAsync)");
  check(cudaMemsetAsync(bad, 0, sizeof(int), 0), "all_finite (cudaMemsetAsync)");
  dispatch_float(dt, [&](auto z) {
    using T = decltype(z);
    all_finite_kernel<T><<<blocks_for(n), kThreads>>>(static_cast<const T*>(x), n, bad);
  });
  check_launch("all_finite");
  int host = 0;
  check(cudaMemcpy(&host, bad, sizeof(int), cudaMemcpyDeviceToHost), "all_finite (cudaMemcpy)");
  check(cudaFreeAsync(bad, 0), "all_finite (cudaFreeAsync)");
  return host == 0;
}

}  // namespace jaclab::cuda
