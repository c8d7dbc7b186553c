#include "cublas.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace jaclab::cuda {
namespace {

// The slice of the cuBLAS C API we use (cublas_api.h, cuBLAS >= 11).
using Handle = void*;
using Status = int;  // CUBLAS_STATUS_SUCCESS = 0
enum Op { kOpN = 0, kOpT = 1 };
enum MathMode { kDefaultMath = 0, kTf32TensorOpMath = 3 };
using CreateFn = Status (*)(Handle*);
using SetStreamFn = Status (*)(Handle, cudaStream_t);
using SetMathModeFn = Status (*)(Handle, int);
using StatusStringFn = const char* (*)(Status);
using SgemmFn = Status (*)(Handle, int, int, int, int, int, const float*, const float*, int, long long, const float*,
                           int, long long, const float*, float*, int, long long, int);
using DgemmFn = Status (*)(Handle, int, int, int, int, int, const double*, const double*, int, long long,
                           const double*, int, long long, const double*, double*, int, long long, int);

struct Cublas {
  std::string library;
  Handle handle = nullptr;
  SetMathModeFn set_math_mode = nullptr;
  StatusStringFn status_string = nullptr;
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  bool tf32 = false;
};

void* sym(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (!p) throw std::runtime_error(std::string("cuBLAS: symbol ") + name + " not found in the loaded library");
  return p;
}

Cublas& cublas() {
  static Cublas c;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    void* lib = nullptr;
    std::string cuda_home = std::getenv("CUDA_HOME") ? std::getenv("CUDA_HOME") : "/usr/local/cuda";
    for (std::string name : {std::string("libcublas.so.13"), std::string("libcublas.so.12"), std::string("libcublas.so"),
                             cuda_home + "/lib64/libcublas.so.13", cuda_home + "/lib64/libcublas.so.12"}) {
      // RTLD_LOCAL: cuBLAS carries its own C++ runtime symbols; loaded globally they would take
      // the place of libstdc++'s in code bound later (seen: a crash formatting an int).
      lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib) {
        c.library = name;
        break;
      }
      tried += (tried.empty() ? "" : ", ") + name;
    }
    if (!lib)
      throw std::runtime_error("jaclab's CUDA matmul needs cuBLAS, which could not be loaded (tried " + tried +
                               "). Install it with `pip install nvidia-cublas` (or `pip install jaclab[cuda]`), "
                               "or put the CUDA toolkit's lib64 on LD_LIBRARY_PATH");
    auto create = reinterpret_cast<CreateFn>(sym(lib, "cublasCreate_v2"));
    auto set_stream = reinterpret_cast<SetStreamFn>(sym(lib, "cublasSetStream_v2"));
    c.set_math_mode = reinterpret_cast<SetMathModeFn>(sym(lib, "cublasSetMathMode"));
    c.status_string = reinterpret_cast<StatusStringFn>(dlsym(lib, "cublasGetStatusString"));  // optional
    c.sgemm = reinterpret_cast<SgemmFn>(sym(lib, "cublasSgemmStridedBatched"));
    c.dgemm = reinterpret_cast<DgemmFn>(sym(lib, "cublasDgemmStridedBatched"));
    if (Status s = create(&c.handle)) throw std::runtime_error("cublasCreate failed with status " + std::to_string(s));
    set_stream(c.handle, nullptr);  // the legacy default stream, like every jaclab kernel
    c.set_math_mode(c.handle, kDefaultMath);
  });
  return c;
}

void check(Cublas& c, Status s, const char* what) {
  if (s == 0) return;
  std::string msg = c.status_string ? c.status_string(s) : "status " + std::to_string(s);
  throw std::runtime_error(std::string("cuBLAS ") + what + " failed: " + msg);
}

int as_int(int64_t v, const char* what) {
  if (v > INT32_MAX) throw std::runtime_error(std::string("cuBLAS GEMM: ") + what + " exceeds 2^31 - 1");
  return static_cast<int>(v);
}

std::atomic<bool> g_tf32_enabled{false};  // readable without loading cuBLAS

}  // namespace

void set_allow_tf32(bool allow) {
  Cublas& c = cublas();
  c.tf32 = allow;
  g_tf32_enabled = allow;
  c.set_math_mode(c.handle, allow ? kTf32TensorOpMath : kDefaultMath);
}
bool allow_tf32() { return cublas().tf32; }
bool tf32_enabled() { return g_tf32_enabled; }
const char* cublas_library() { return cublas().library.c_str(); }

void gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* a, int64_t lda,
          int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, void* c, int64_t batch, bool accumulate) {
  Cublas& cb = cublas();
  // cuBLAS is column-major: the row-major C (M x N) is the column-major C^T (N x M) = B^T A^T,
  // so the operands swap places and each keeps its own transpose flag.
  const int m = as_int(N, "N"), n = as_int(M, "M"), k = as_int(K, "K"), nb = as_int(batch, "batch");
  const int opa = trans_b ? kOpT : kOpN, opb = trans_a ? kOpT : kOpN;
  if (dt == DType::Float32) {
    const float one = 1, beta = accumulate ? 1.f : 0.f;
    check(cb, cb.sgemm(cb.handle, opa, opb, m, n, k, &one, static_cast<const float*>(b), as_int(ldb, "ldb"), stride_b,
                       static_cast<const float*>(a), as_int(lda, "lda"), stride_a, &beta, static_cast<float*>(c), m,
                       static_cast<long long>(M) * N, nb),
          "SgemmStridedBatched");
  } else {
    const double one = 1, beta = accumulate ? 1.0 : 0.0;
    check(cb, cb.dgemm(cb.handle, opa, opb, m, n, k, &one, static_cast<const double*>(b), as_int(ldb, "ldb"),
                       stride_b, static_cast<const double*>(a), as_int(lda, "lda"), stride_a, &beta,
                       static_cast<double*>(c), m, static_cast<long long>(M) * N, nb),
          "DgemmStridedBatched");
  }
}

}  // namespace jaclab::cuda
