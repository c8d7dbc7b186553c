// Fused CPU kernels for the blocks. Shape legend: N rows (all leading dims flattened), K/N GEMM
// dims, T queries, S keys, dh head size, dv value size.
#include <algorithm>
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

// ---- attention, per (T, S) slice: scores and probabilities live in one slice-sized buffer -----
namespace {
struct AttnDims {
  int64_t T, S, dh, dv, slices;
};
AttnDims attn_dims(const Array& q, const Array& k, const Array& v) {
  const int n = q.ndim();
  AttnDims d{q.shape()[n - 2], k.shape()[n - 2], q.shape()[n - 1], v.shape()[n - 1], 0};
  d.slices = (d.T != 0 && d.dh != 0) ? q.numel() / (d.T * d.dh) : 0;
  return d;
}

// P (T x S) = softmax(q k^T * scale [+ causal mask]) of one slice; masked entries are 0, and so is
// a row that sees no key. Returns nothing: P is written in place.
template <class T>
void attention_probs(const T* qs, const T* ks, const AttnDims& d, bool causal, T scale, T* P) {
  gemm<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, scale, qs, d.dh, ks, d.dh, T(0), P, d.S);  // scores
  for (int64_t t = 0; t < d.T; ++t) {
    T* row = P + t * d.S;
    const int64_t visible = causal ? std::clamp<int64_t>(t + (d.S - d.T) + 1, 0, d.S) : d.S;  // keys s <= t (+ offset)
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < visible; ++j) m = std::max(m, row[j]);
    T sum = 0;
    for (int64_t j = 0; j < visible; ++j) row[j] -= m;
    vecmath::map(vecmath::Fn::Exp, row, row, visible);
    for (int64_t j = 0; j < visible; ++j) sum += row[j];
    const T inv = visible > 0 ? T(1) / sum : T(0);
    for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
    for (int64_t j = visible; j < d.S; ++j) row[j] = T(0);
  }
}

// X <- P * (X - rowsum(P * X)) * alpha: the softmax's JVP (X = dS) and, by symmetry, its VJP (X = gP).
template <class T>
void softmax_jvp_rows(const T* P, T* X, int64_t rows, int64_t cols, T alpha) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* p = P + t * cols;
    T* x = X + t * cols;
    T mu = 0;
    for (int64_t j = 0; j < cols; ++j) mu += p[j] * x[j];
    for (int64_t j = 0; j < cols; ++j) x[j] = p[j] * (x[j] - mu) * alpha;
  }
}
}  // namespace

Array attention(const Array& q_in, const Array& k_in, const Array& v_in, bool causal) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in})) return be->attention(q_in, k_in, v_in, causal);
  Array q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const AttnDims d = attn_dims(q, k, v);
  Shape out_shape = q.shape();
  out_shape.back() = d.dv;
  Array out = Array::empty(out_shape, q.dtype());
  dispatch_float(q.dtype(), [&](auto z) {
    using T = decltype(z);
    std::vector<T> P(static_cast<size_t>(d.T * d.S));
    for (int64_t s = 0; s < d.slices; ++s) {
      attention_probs<T>(q.data<T>() + s * d.T * d.dh, k.data<T>() + s * d.S * d.dh, d, causal,
                         T(1) / std::sqrt(T(d.dh)), P.data());
      gemm<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), P.data(), d.S, v.data<T>() + s * d.S * d.dv, d.dv, T(0),
              out.data<T>() + s * d.T * d.dv, d.dv);  // P v
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

// Fused on the CPU too: per slice, P and the tangent (or cotangent) of the scores share two
// slice-sized buffers, instead of the composition's (B, H, T, S) intermediates.
//   jvp  dS = (dq k^T + q dk^T) scale; o_dot = [P (dS - rowsum(P dS))] v + P dv
//   vjp  gv = P^T g; gP = g v^T; gS = P (gP - rowsum(P gP)) scale; gq = gS k; gk = gS^T q
bool attention_jvp(const Array& q_in, const Array& k_in, const Array& v_in, const Array* dq, const Array* dk,
                   const Array* dv, bool causal, Array& o, Array& o_dot) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in, dq, dk, dv}))
    return be->attention_jvp(q_in, k_in, v_in, dq, dk, dv, causal, o, o_dot);
  if ((dq && dq->shape() != q_in.shape()) || (dk && dk->shape() != k_in.shape()) || (dv && dv->shape() != v_in.shape()))
    return false;  // tangents shared across rows (broadcast): the composite rule
  Array q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  Array tq = dq ? dq->contiguous() : Array(), tk = dk ? dk->contiguous() : Array(), tv = dv ? dv->contiguous() : Array();
  const AttnDims d = attn_dims(q, k, v);
  Shape out_shape = q.shape();
  out_shape.back() = d.dv;
  o = Array::empty(out_shape, q.dtype());
  o_dot = Array::empty(out_shape, q.dtype());
  dispatch_float(q.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = T(1) / std::sqrt(T(d.dh));
    std::vector<T> P(static_cast<size_t>(d.T * d.S)), dS(P.size());
    for (int64_t s = 0; s < d.slices; ++s) {
      const T *qs = q.data<T>() + s * d.T * d.dh, *ks = k.data<T>() + s * d.S * d.dh, *vs = v.data<T>() + s * d.S * d.dv;
      T *os = o.data<T>() + s * d.T * d.dv, *ts = o_dot.data<T>() + s * d.T * d.dv;
      attention_probs<T>(qs, ks, d, causal, scale, P.data());
      gemm<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), P.data(), d.S, vs, d.dv, T(0), os, d.dv);  // o = P v
      T beta = T(0);
      if (dq || dk) {
        if (dq) gemm<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, T(1), tq.data<T>() + s * d.T * d.dh, d.dh, ks, d.dh,
                        T(0), dS.data(), d.S);
        if (dk) gemm<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, T(1), qs, d.dh, tk.data<T>() + s * d.S * d.dh, d.dh,
                        dq ? T(1) : T(0), dS.data(), d.S);
        softmax_jvp_rows<T>(P.data(), dS.data(), d.T, d.S, scale);  // masked entries: P = 0 there
        gemm<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), dS.data(), d.S, vs, d.dv, T(0), ts, d.dv);
        beta = T(1);
      }
      if (dv)
        gemm<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), P.data(), d.S, tv.data<T>() + s * d.S * d.dv, d.dv,
                beta, ts, d.dv);
      else if (beta == T(0))
        std::fill(ts, ts + d.T * d.dv, T(0));
    }
  });
  return true;
}

bool attention_vjp(const Array& q_in, const Array& k_in, const Array& v_in, const Array& o, const Array& g_in,
                   bool causal, Array* gq, Array* gk, Array* gv) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in, &o, &g_in}))
    return be->attention_vjp(q_in, k_in, v_in, o, g_in, causal, gq, gk, gv);
  Array q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const AttnDims d = attn_dims(q, k, v);
  Shape out_shape = q.shape();
  out_shape.back() = d.dv;
  if (g_in.shape() != out_shape) return false;
  Array g = g_in.contiguous();
  if (gq) *gq = Array::empty(q.shape(), q.dtype());
  if (gk) *gk = Array::empty(k.shape(), q.dtype());
  if (gv) *gv = Array::empty(v.shape(), q.dtype());
  dispatch_float(q.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = T(1) / std::sqrt(T(d.dh));
    std::vector<T> P(static_cast<size_t>(d.T * d.S)), gS(P.size());
    for (int64_t s = 0; s < d.slices; ++s) {
      const T *qs = q.data<T>() + s * d.T * d.dh, *ks = k.data<T>() + s * d.S * d.dh, *vs = v.data<T>() + s * d.S * d.dv;
      const T* gs = g.data<T>() + s * d.T * d.dv;
      attention_probs<T>(qs, ks, d, causal, scale, P.data());
      if (gv)
        gemm<T>(CblasTrans, CblasNoTrans, d.S, d.dv, d.T, T(1), P.data(), d.S, gs, d.dv, T(0),
                gv->data<T>() + s * d.S * d.dv, d.dv);  // P^T g
      if (!gq && !gk) continue;
      gemm<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dv, T(1), gs, d.dv, vs, d.dv, T(0), gS.data(), d.S);  // g v^T
      softmax_jvp_rows<T>(P.data(), gS.data(), d.T, d.S, scale);
      if (gq)
        gemm<T>(CblasNoTrans, CblasNoTrans, d.T, d.dh, d.S, T(1), gS.data(), d.S, ks, d.dh, T(0),
                gq->data<T>() + s * d.T * d.dh, d.dh);
      if (gk)
        gemm<T>(CblasTrans, CblasNoTrans, d.S, d.dh, d.T, T(1), gS.data(), d.S, qs, d.dh, T(0),
                gk->data<T>() + s * d.S * d.dh, d.dh);
    }
  });
  return true;
}

}  // namespace jaclab::kernels
