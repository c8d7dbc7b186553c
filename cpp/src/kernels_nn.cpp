// Fused CPU kernels for the blocks. Shape legend: N rows (all leading dims flattened), K/N GEMM
// dims, T queries, S keys, dh head size, dv value size.
#include <cmath>
#include <limits>

#include "jaclab/backend.h"
#include "jaclab/blas.h"
#include "jaclab/kernels.h"
#include "kernel_util.h"
#include "vec/vecmath.h"

namespace jaclab::kernels {
using detail::dispatch_float;
using detail::gemm;

Array linear(const Array& x_in, const Array& W_in, const Array& b_in) {
  if (backend_for("linear", {&x_in, &W_in, &b_in})) return matmul(x_in, W_in, &b_in);  // the GEMM adds the bias
  Array x = x_in.contiguous(), W = W_in.contiguous(), b = b_in.contiguous();
  const int64_t K = W.shape()[0], N = W.shape()[1];
  const int64_t rows = K ? x.numel() / K : 0;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Array y = Array::empty(out_shape, x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T* yp = y.data<T>();
    const T* bp = b.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < N; ++j) yp[r * N + j] = bp[j];
    if (rows && N && K) gemm<T>(CblasNoTrans, CblasNoTrans, rows, N, K, T(1), x.data<T>(), K, W.data<T>(), N, T(1), yp, N);
  });
  return y;
}

Array attention(const Array& q_in, const Array& k_in, const Array& v_in, bool causal) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in})) return be->attention(q_in, k_in, v_in, causal);
  Array q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int n = q.ndim();
  const int64_t T_ = q.shape()[n - 2], dh = q.shape()[n - 1], S = k.shape()[n - 2], dv = v.shape()[n - 1];
  const int64_t slices = (T_ != 0 && dh != 0) ? q.numel() / (T_ * dh) : 0;
  Shape out_shape = q.shape();
  out_shape.back() = dv;
  Array out = Array::empty(out_shape, q.dtype());
  dispatch_float(q.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = T(1) / std::sqrt(T(dh));
    std::vector<T> P(static_cast<size_t>(T_ * S));
    for (int64_t s = 0; s < slices; ++s) {
      const T* qs = q.data<T>() + s * T_ * dh;
      const T* ks = k.data<T>() + s * S * dh;
      const T* vs = v.data<T>() + s * S * dv;
      T* os = out.data<T>() + s * T_ * dv;
      gemm<T>(CblasNoTrans, CblasTrans, T_, S, dh, scale, qs, dh, ks, dh, T(0), P.data(), S);  // scores
      for (int64_t t = 0; t < T_; ++t) {
        T* row = P.data() + t * S;
        const int64_t visible = causal ? std::min<int64_t>(S, t + (S - T_) + 1) : S;  // keys s <= t (+ offset)
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < visible; ++j) m = std::max(m, row[j]);
        T sum = 0;
        for (int64_t j = 0; j < visible; ++j) row[j] -= m;
        vecmath::map(vecmath::Fn::Exp, row, row, visible);
        for (int64_t j = 0; j < visible; ++j) sum += row[j];
        const T inv = visible > 0 ? T(1) / sum : T(0);
        for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
        for (int64_t j = std::max<int64_t>(visible, 0); j < S; ++j) row[j] = T(0);
      }
      gemm<T>(CblasNoTrans, CblasNoTrans, T_, dv, S, T(1), P.data(), S, vs, dv, T(0), os, dv);  // P v
    }
  });
  return out;
}

Array layer_norm(const Array& x_in, const Array& g_in, const Array& b_in, double eps) {
  if (DeviceBackend* be = backend_for("layer_norm", {&x_in, &g_in, &b_in})) return be->layer_norm(x_in, g_in, b_in, eps);
  Array x = x_in.contiguous(), g = g_in.contiguous(), b = b_in.contiguous();
  const int64_t d = x.shape().back(), rows = d ? x.numel() / d : 0;
  Array y = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp = x.data<T>();
    const T* gp = g.data<T>();
    const T* bp = b.data<T>();
    T* yp = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * d;
      double mu = 0, var = 0;
      for (int64_t j = 0; j < d; ++j) mu += xr[j];
      mu /= d;
      for (int64_t j = 0; j < d; ++j) var += (xr[j] - mu) * (xr[j] - mu);
      var /= d;
      const T rstd = static_cast<T>(1.0 / std::sqrt(var + eps));
      for (int64_t j = 0; j < d; ++j) yp[r * d + j] = (xr[j] - static_cast<T>(mu)) * rstd * gp[j] + bp[j];
    }
  });
  return y;
}

bool attention_jvp(const Array& q, const Array& k, const Array& v, const Array* dq, const Array* dk, const Array* dv,
                   bool causal, Array& o, Array& o_dot) {
  DeviceBackend* be = backend_for("attention", {&q, &k, &v, dq, dk, dv});
  return be && be->attention_jvp(q, k, v, dq, dk, dv, causal, o, o_dot);  // the CPU uses the composite rule
}

bool attention_vjp(const Array& q, const Array& k, const Array& v, const Array& o, const Array& g, bool causal,
                   Array* gq, Array* gk, Array* gv) {
  DeviceBackend* be = backend_for("attention", {&q, &k, &v, &o, &g});
  return be && be->attention_vjp(q, k, v, o, g, causal, gq, gk, gv);
}

}  // namespace jaclab::kernels
