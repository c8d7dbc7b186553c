// Fused CPU kernels for the blocks. Shape legend: N rows (all leading dims flattened), K/N GEMM
// dims, T queries, S keys, dh head size, dv value size.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "jaclab/backend.h"
#include "jaclab/blas.h"
#include "jaclab/kernels.h"
#include "jaclab/parallel.h"
#include "kernel_util.h"
#include "vec/vecmath.h"

namespace jaclab::kernels {
using detail::dispatch_float;
using detail::gemm;

Array linear(const Array& x_in, const Array& W_in, const Array& b_in) {
  if (backend_for("linear", {&x_in, &W_in, &b_in})) return matmul(x_in, W_in, &b_in);  // the GEMM adds the bias
  Array x = x_in.contiguous(), W = W_in.contiguous(), b = b_in.contiguous();
  const int64_t K = W.shape()[0], N = W.shape()[1];
  Shape out_shape = x.shape();
  out_shape.back() = N;
  const int64_t rows = numel_of(out_shape) / std::max<int64_t>(N, 1);  // x's leading dims (K may be 0)
  Array y = Array::empty(out_shape, x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T* yp = y.data<T>();
    const T* bp = b.data<T>();
    if (rows == 0 || N == 0) return;
    // Each thread writes the bias into its block of y, then accumulates its GEMM onto it.
    const detail::GemmCall<T> call{CblasNoTrans, CblasNoTrans, rows, N, K, x.data<T>(), K, W.data<T>(), N, T(1), yp, N};
    detail::split_c(call, [&](auto cut) {
      const detail::GemmCall<T> blk = cut(call);
      detail::fill_rows(blk, yp, bp);
      if (K) blk.run_serial();
    });
  });
  return y;
}

// ---- attention, by groups of (T, S) slices -----------------------------------------------------
// A (B, H, T, dh) attention is B*H independent slices. They are processed in groups whose
// scores and probabilities fit one buffer of about 1M elements (all of them for short sequences,
// one at a time for long ones), so the (B, H, T, S) intermediates of the composition never exist
// at once; within a group the small per-slice GEMMs run side by side and the softmax rows are
// split over threads.
//
// Operands are read and results written in place in the layout they come in: multi-head
// attention's head split gives (B, H, T, dh) views of (B, T, H, dh) memory (a permutation), and
// copying q, k, v (and, in the VJP, g) to contiguous arrays, then the results back, was ~2% of a
// transformer block's gradient. Slice i = (b, h) of such an operand starts at b * stride_b +
// h * stride_h, its rows `ld` apart; results are allocated in the inputs' layout, so the head
// merge after them is a free reshape.
namespace {
struct AttnDims {
  int64_t T, S, dh, dv, slices;
  int64_t sp;  // elements per slice of P (T x S)
};
AttnDims attn_dims(const Array& q, const Array& k, const Array& v) {
  const int n = q.ndim();
  AttnDims d{q.shape()[n - 2], k.shape()[n - 2], q.shape()[n - 1], v.shape()[n - 1], 0, 0};
  d.slices = (d.T != 0 && d.dh != 0) ? q.numel() / (d.T * d.dh) : 0;
  d.sp = d.T * d.S;
  return d;
}

// Where slice i of a (..., rows, cols) operand starts (elements from its data pointer) and its
// row stride; `inner` is the size of the dim before the rows (heads), 1 for rank < 4.
struct SliceLayout {
  int64_t inner = 1, stride_outer = 0, stride_inner = 0, ld = 0;
  int64_t offset(int64_t i) const { return (i / inner) * stride_outer + (i % inner) * stride_inner; }
};

// The operand as the kernels read it: `in` itself when its rows are contiguous (last stride 1)
// and its slices are addressable as above, else a contiguous copy (kept alive in `keep`).
const Array& sliced(const Array& in, Array& keep, SliceLayout& L) {
  const int n = in.ndim();
  const Shape& st = in.strides();
  const Shape& sh = in.shape();
  const bool ok = n >= 2 && n <= 4 && (st[n - 1] == 1 || sh[n - 1] == 1) && st[n - 2] >= sh[n - 1] &&
                  std::all_of(st.begin(), st.end(), [](int64_t x) { return x >= 0; });
  const Array& a = ok ? in : (keep = in.contiguous());
  const Shape& s = a.strides();
  L = SliceLayout{};
  L.ld = s[n - 2];
  if (n == 4) L.inner = a.shape()[1], L.stride_outer = s[0], L.stride_inner = s[1];
  else if (n == 3) L.stride_outer = s[0];
  return a;
}

// A fresh (..., rows, cols) array laid out like `like` (the same order of its leading dims in
// memory, e.g. (B, T, H, dh) seen as (B, H, T, dh)), with `cols` columns.
Array empty_like_layout(const Array& like, int64_t cols) {
  Shape shape = like.shape();
  shape.back() = cols;
  if (like.ndim() != 4 || like.is_contiguous() || !(like.strides()[2] > like.strides()[1]) ||
      !(like.strides()[0] >= like.strides()[2]))
    return Array::empty(shape, like.dtype());
  // Heads inside rows: allocate (B, T, H, cols) and view it as (B, H, T, cols).
  return Array::empty({shape[0], shape[2], shape[1], cols}, like.dtype()).permute_view({0, 2, 1, 3});
}

int64_t group_slices(const AttnDims& d) {
  return std::clamp<int64_t>((int64_t{1} << 20) / std::max<int64_t>(1, d.T * d.S), 1, std::max<int64_t>(1, d.slices));
}

// Slices first, first+1, ... of an operand.
template <class T>
struct Slices {
  T* base;
  SliceLayout L;
  int64_t first;
  T* at(int64_t i) const { return base + L.offset(first + i); }
};
// A group buffer: n slices of rows x cols, one after another.
template <class T>
Slices<T> buffer_slices(T* base, int64_t rows, int64_t cols) {
  SliceLayout L;
  L.stride_outer = rows * cols, L.ld = cols;
  return {base, L, 0};
}

// C_i = alpha op(A_i) op(B_i) + beta C_i for the `n` slices of a group: side by side, one slice
// per thread, when they are small (2-3x faster for attention-sized slices than splitting each
// over all threads), else one after another, each split.
template <class T>
void slice_gemms(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, T alpha, Slices<const T> A,
                 Slices<const T> B, T beta, Slices<T> C, int64_t n) {
  auto one = [&](int64_t i) {
    gemm<T>(ta, tb, M, N, K, alpha, A.at(i), A.L.ld, B.at(i), B.L.ld, beta, C.at(i), C.L.ld);
  };
  if (detail::batch_pays(n, M, N, K)) return detail::side_by_side(n, one);
  for (int64_t i = 0; i < n; ++i) one(i);
}
template <class T>
Slices<const T> as_const(const Slices<T>& x) { return {x.base, x.L, x.first}; }

// Rows r of n slices' (T, S) blocks, split over threads (row r is query t = r % T of its slice).
template <class F>
void for_rows(const AttnDims& d, int64_t n, F&& row_fn) {
  parallel::for_range(n * d.T, std::max<int64_t>(1, parallel::kGrainTranscend / std::max<int64_t>(1, d.S)),
                      [&](int64_t r0, int64_t r1) {
                        for (int64_t r = r0; r < r1; ++r) row_fn(r, r % d.T);
                      });
}

// P (n x T x S) = softmax(q k^T * scale [+ causal mask]) of n consecutive slices; masked entries are
// 0, and so is a row that sees no key.
template <class T>
void attention_probs(Slices<const T> qs, Slices<const T> ks, const AttnDims& d, int64_t n, bool causal, T scale, T* P) {
  slice_gemms<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, scale, qs, ks, T(0), buffer_slices(P, d.T, d.S),
                 n);  // scores
  for_rows(d, n, [&](int64_t r, int64_t t) {
    T* row = P + r * d.S;
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
  });
}

// X <- P * (X - rowsum(P * X)) * alpha over n slices: the softmax's JVP (X = dS) and, by
// symmetry, its VJP (X = gP).
template <class T>
void softmax_jvp_rows(const T* P, T* X, const AttnDims& d, int64_t n, T alpha) {
  for_rows(d, n, [&](int64_t r, int64_t) {
    const T* p = P + r * d.S;
    T* x = X + r * d.S;
    T mu = 0;
    for (int64_t j = 0; j < d.S; ++j) mu += p[j] * x[j];
    for (int64_t j = 0; j < d.S; ++j) x[j] = p[j] * (x[j] - mu) * alpha;
  });
}

// q, k, v (and the tangents or the cotangent) as the kernels read them: the array itself, or
// its contiguous copy (see sliced()). Copyable: `src` is the caller's array, `keep` a handle.
struct AttnOperand {
  const Array* src = nullptr;
  Array keep;
  SliceLayout L;
  AttnOperand() = default;
  explicit AttnOperand(const Array& in) : src(&in) { sliced(in, keep, L); }
  const Array& arr() const { return keep.defined() ? keep : *src; }
  template <class T>
  Slices<const T> slices(int64_t first) const { return Slices<const T>{arr().data<T>(), L, first}; }
};
// Slices of a result array (allocated by empty_like_layout, which sliced() always takes as is).
template <class T>
Slices<T> out_slices(const Array& out, int64_t first) {
  SliceLayout L;
  Array copy;
  sliced(out, copy, L);
  if (copy.defined()) throw std::logic_error("attention: a result array in a layout the kernel cannot write");
  return Slices<T>{out.data<T>(), L, first};
}

// The loop all three kernels share: body(s, n, P) for each group of n slices starting at slice
// s, with P (n x T x S) that group's probabilities, in one group-sized scratch buffer (from the
// block cache: no page faults).
template <class T, class F>
void for_slice_groups(const AttnOperand& q, const AttnOperand& k, const AttnDims& d, bool causal, F&& body) {
  const int64_t G = group_slices(d);
  Array P_buf = Array::empty({G * d.sp}, q.arr().dtype());
  T* P = P_buf.data<T>();
  for (int64_t s = 0; s < d.slices; s += G) {
    const int64_t n = std::min(G, d.slices - s);
    attention_probs<T>(q.slices<T>(s), k.slices<T>(s), d, n, causal, T(1) / std::sqrt(T(d.dh)), P);
    body(s, n, P);
  }
}
}  // namespace

Array attention(const Array& q_in, const Array& k_in, const Array& v_in, bool causal) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in})) return be->attention(q_in, k_in, v_in, causal);
  AttnOperand q(q_in), k(k_in), v(v_in);
  const AttnDims d = attn_dims(q_in, k_in, v_in);
  Array out = empty_like_layout(q_in, d.dv);
  dispatch_float(q_in.dtype(), [&](auto z) {
    using T = decltype(z);
    for_slice_groups<T>(q, k, d, causal, [&](int64_t s, int64_t n, const T* P) {
      slice_gemms<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), buffer_slices(P, d.T, d.S), v.slices<T>(s), T(0),
                     out_slices<T>(out, s), n);  // P v
    });
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
    parallel::for_range(rows, std::max<int64_t>(1, parallel::kGrainCheap / std::max<int64_t>(1, 4 * d)),
                        [&](int64_t r0, int64_t r1) {  // ~4 passes over a row
      for (int64_t r = r0; r < r1; ++r) {
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
  });
  return y;
}

// Per row r: the mean and rstd of x_r (accumulated in double, as the forward).
template <class T>
void ln_row_stats(const T* xr, int64_t d, double eps, double& mu, double& rstd) {
  double m = 0, v = 0;
  for (int64_t j = 0; j < d; ++j) m += xr[j];
  m /= d;
  for (int64_t j = 0; j < d; ++j) v += (xr[j] - m) * (xr[j] - m);
  mu = m, rstd = 1.0 / std::sqrt(v / d + eps);
}

bool layer_norm_jvp(const Array& x_in, const Array& g_in, const Array* dx, const Array* dg, const Array* db, double eps,
                    Array& y_dot) {
  if (DeviceBackend* be = backend_for("layer_norm", {&x_in, &g_in, dx, dg, db}))
    return be->layer_norm_jvp(x_in, g_in, dx, dg, db, eps, y_dot);
  const int64_t d = x_in.shape().back();
  if ((dx && dx->shape() != x_in.shape()) || (dg && dg->shape() != g_in.shape()) || (db && db->shape() != g_in.shape()))
    return false;  // tangents shared across rows (broadcast): the composite rule
  Array x = x_in.contiguous(), g = g_in.contiguous();
  Array tx = dx ? dx->contiguous() : Array(), tg = dg ? dg->contiguous() : Array(), tb = db ? db->contiguous() : Array();
  const int64_t rows = d ? x.numel() / d : 0;
  y_dot = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *xp = x.data<T>(), *gp = g.data<T>(), *txp = dx ? tx.data<T>() : nullptr;
    const T *tgp = dg ? tg.data<T>() : nullptr, *tbp = db ? tb.data<T>() : nullptr;
    T* yp = y_dot.data<T>();
    parallel::for_range(rows, std::max<int64_t>(1, parallel::kGrainCheap / std::max<int64_t>(1, 6 * d)),
                        [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = xp + r * d;
        T* yr = yp + r * d;
        double mu, rstd;
        ln_row_stats(xr, d, eps, mu, rstd);
        double m1 = 0, m2 = 0;  // mean(dx), mean(xhat dx)
        if (txp) {
          const T* tr = txp + r * d;
          for (int64_t j = 0; j < d; ++j) {
            m1 += tr[j];
            m2 += (xr[j] - mu) * rstd * tr[j];
          }
          m1 /= d, m2 /= d;
        }
        for (int64_t j = 0; j < d; ++j) {
          const T xh = static_cast<T>((xr[j] - mu) * rstd);
          T t = txp ? static_cast<T>(rstd * (txp[r * d + j] - m1 - xh * m2)) * gp[j] : T(0);
          if (tgp) t += xh * tgp[j];
          if (tbp) t += tbp[j];
          yr[j] = t;
        }
      }
    });
  });
  return true;
}

bool layer_norm_vjp(const Array& x_in, const Array& g_in, const Array& gy_in, double eps, Array* gx, Array* gg_rows) {
  if (DeviceBackend* be = backend_for("layer_norm", {&x_in, &g_in, &gy_in}))
    return be->layer_norm_vjp(x_in, g_in, gy_in, eps, gx, gg_rows);
  if (gy_in.shape() != x_in.shape()) return false;  // a batch of cotangents: the composite rule
  const int64_t d = x_in.shape().back();
  Array x = x_in.contiguous(), g = g_in.contiguous(), gy = gy_in.contiguous();
  const int64_t rows = d ? x.numel() / d : 0;
  if (gx) *gx = Array::empty(x.shape(), x.dtype());
  if (gg_rows) *gg_rows = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *xp = x.data<T>(), *gp = g.data<T>(), *gyp = gy.data<T>();
    T* gxp = gx ? gx->data<T>() : nullptr;
    T* ggp = gg_rows ? gg_rows->data<T>() : nullptr;
    parallel::for_range(rows, std::max<int64_t>(1, parallel::kGrainCheap / std::max<int64_t>(1, 6 * d)),
                        [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T *xr = xp + r * d, *gr = gyp + r * d;
        double mu, rstd;
        ln_row_stats(xr, d, eps, mu, rstd);
        if (ggp)
          for (int64_t j = 0; j < d; ++j) ggp[r * d + j] = gr[j] * static_cast<T>((xr[j] - mu) * rstd);
        if (!gxp) continue;
        double m1 = 0, m2 = 0;  // mean(gxh), mean(gxh xhat)
        for (int64_t j = 0; j < d; ++j) {
          const double gxh = static_cast<double>(gr[j]) * gp[j];
          m1 += gxh;
          m2 += gxh * (xr[j] - mu) * rstd;
        }
        m1 /= d, m2 /= d;
        for (int64_t j = 0; j < d; ++j) {
          const T xh = static_cast<T>((xr[j] - mu) * rstd);
          gxp[r * d + j] = static_cast<T>(rstd * (gr[j] * gp[j] - m1 - xh * m2));
        }
      }
    });
  });
  return true;
}

// Fused on the CPU too: per group of slices, P and the tangent (or cotangent) of the scores share
// two group-sized buffers, instead of the composition's (B, H, T, S) intermediates.
//   jvp  dS = (dq k^T + q dk^T) scale; o_dot = [P (dS - rowsum(P dS))] v + P dv
//   vjp  gv = P^T g; gP = g v^T; gS = P (gP - rowsum(P gP)) scale; gq = gS k; gk = gS^T q
bool attention_jvp(const Array& q_in, const Array& k_in, const Array& v_in, const Array* dq, const Array* dk,
                   const Array* dv, bool causal, Array& o, Array& o_dot) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in, dq, dk, dv}))
    return be->attention_jvp(q_in, k_in, v_in, dq, dk, dv, causal, o, o_dot);
  if ((dq && dq->shape() != q_in.shape()) || (dk && dk->shape() != k_in.shape()) || (dv && dv->shape() != v_in.shape()))
    return false;  // tangents shared across rows (broadcast): the composite rule
  AttnOperand q(q_in), k(k_in), v(v_in);
  AttnOperand tq = dq ? AttnOperand(*dq) : AttnOperand(), tk = dk ? AttnOperand(*dk) : AttnOperand();
  AttnOperand tv = dv ? AttnOperand(*dv) : AttnOperand();
  const AttnDims d = attn_dims(q_in, k_in, v_in);
  o = empty_like_layout(q_in, d.dv);
  o_dot = empty_like_layout(q_in, d.dv);
  dispatch_float(q_in.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = T(1) / std::sqrt(T(d.dh));
    Array dS_buf = Array::empty({group_slices(d) * d.sp}, q_in.dtype());
    T* dS = dS_buf.data<T>();
    for_slice_groups<T>(q, k, d, causal, [&](int64_t s, int64_t n, const T* P) {
      const auto Ps = buffer_slices(P, d.T, d.S);
      const auto dSs = buffer_slices(dS, d.T, d.S);
      const auto ts = out_slices<T>(o_dot, s);
      slice_gemms<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), Ps, v.slices<T>(s), T(0), out_slices<T>(o, s),
                     n);  // o = P v
      T beta = T(0);
      if (dq || dk) {
        if (dq)
          slice_gemms<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, T(1), tq.slices<T>(s), k.slices<T>(s), T(0), dSs, n);
        if (dk)
          slice_gemms<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dh, T(1), q.slices<T>(s), tk.slices<T>(s),
                         dq ? T(1) : T(0), dSs, n);
        softmax_jvp_rows<T>(P, dS, d, n, scale);  // masked entries: P = 0 there
        slice_gemms<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), as_const(dSs), v.slices<T>(s), T(0), ts, n);
        beta = T(1);
      }
      if (dv) {
        slice_gemms<T>(CblasNoTrans, CblasNoTrans, d.T, d.dv, d.S, T(1), Ps, tv.slices<T>(s), beta, ts, n);
      } else if (beta == T(0)) {
        for (int64_t i = 0; i < n; ++i)
          for (int64_t t = 0; t < d.T; ++t) std::fill(ts.at(i) + t * ts.L.ld, ts.at(i) + t * ts.L.ld + d.dv, T(0));
      }
    });
  });
  return true;
}

bool attention_vjp(const Array& q_in, const Array& k_in, const Array& v_in, const Array& o, const Array& g_in,
                   bool causal, Array* gq, Array* gk, Array* gv) {
  if (DeviceBackend* be = backend_for("attention", {&q_in, &k_in, &v_in, &o, &g_in}))
    return be->attention_vjp(q_in, k_in, v_in, o, g_in, causal, gq, gk, gv);
  const AttnDims d = attn_dims(q_in, k_in, v_in);
  Shape out_shape = q_in.shape();
  out_shape.back() = d.dv;
  if (g_in.shape() != out_shape) return false;
  AttnOperand q(q_in), k(k_in), v(v_in), g(g_in);
  if (gq) *gq = empty_like_layout(q_in, d.dh);
  if (gk) *gk = empty_like_layout(k_in, d.dh);
  if (gv) *gv = empty_like_layout(v_in, d.dv);
  dispatch_float(q_in.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = T(1) / std::sqrt(T(d.dh));
    Array gS_buf = Array::empty({group_slices(d) * d.sp}, q_in.dtype());
    T* gS = gS_buf.data<T>();
    for_slice_groups<T>(q, k, d, causal, [&](int64_t s, int64_t n, const T* P) {
      const auto gSs = buffer_slices(gS, d.T, d.S);
      if (gv)
        slice_gemms<T>(CblasTrans, CblasNoTrans, d.S, d.dv, d.T, T(1), buffer_slices(P, d.T, d.S), g.slices<T>(s), T(0),
                       out_slices<T>(*gv, s), n);  // P^T g
      if (!gq && !gk) return;
      slice_gemms<T>(CblasNoTrans, CblasTrans, d.T, d.S, d.dv, T(1), g.slices<T>(s), v.slices<T>(s), T(0), gSs,
                     n);  // g v^T
      softmax_jvp_rows<T>(P, gS, d, n, scale);
      if (gq)
        slice_gemms<T>(CblasNoTrans, CblasNoTrans, d.T, d.dh, d.S, T(1), as_const(gSs), k.slices<T>(s), T(0),
                       out_slices<T>(*gq, s), n);
      if (gk)
        slice_gemms<T>(CblasTrans, CblasNoTrans, d.S, d.dh, d.T, T(1), as_const(gSs), q.slices<T>(s), T(0),
                       out_slices<T>(*gk, s), n);
    });
  });
  return true;
}

}  // namespace jaclab::kernels
