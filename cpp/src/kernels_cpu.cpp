// CPU kernels. Shape legend: arrays are padded on the left to 4 dims (i0, i1, i2, i3) so that one
// loop nest serves every rank; the innermost index i3 is the fastest-moving.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <lapacke.h>

#include "jaclab/backend.h"
#include "jaclab/blas.h"
#include "jaclab/kernels.h"
#include "kernel_util.h"
#include "jaclab/parallel.h"
#include "vec/vecmath.h"

namespace jaclab::kernels {
namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

using detail::dispatch_float;

template <class F>
void dispatch_all(DType dt, F&& f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::Float64) f(double{});
  else f(int64_t{});
}

template <class Out, class In>
void copy_typed(const Array& src, Array& dst) {
  const In* x = src.data<In>();
  Out* y = dst.data<Out>();
  if (src.is_contiguous() && dst.is_contiguous()) {
    int64_t n = src.numel();
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<Out>(x[i]);
    return;
  }
  Strided4 a = pad4(src.shape(), src.strides(), dst.shape());
  Strided4 b = pad4(dst.shape(), dst.strides(), dst.shape());
  // A transposition (the source steps by 1 along an outer axis, not the innermost): copy in
  // square tiles, so that both reading and writing stay within a few cache lines per row.
  // Element by element, every read of a large transpose would touch a new cache line.
  int unit = -1;
  for (int d = 0; d < 3; ++d)
    if (a.s[d] == 1 && a.n[d] > 1) unit = d;
  if (unit >= 0 && a.s[3] != 1 && a.n[3] > 1 && dst.is_contiguous()) {
    constexpr int64_t kTile = 32;
    int other[2], k = 0;
    for (int d = 0; d < 3; ++d)
      if (d != unit) other[k++] = d;
    const int64_t nu = a.n[unit], n3 = a.n[3], su = b.s[unit], s3 = a.s[3];
    const int64_t n1 = a.n[other[1]], u_tiles = (nu + kTile - 1) / kTile;
    // Work items: one band of kTile source columns (u) of one (o0, o1) slice, split over the pool.
    const int64_t items = a.n[other[0]] * n1 * u_tiles;
    parallel::for_range(items, std::max<int64_t>(1, parallel::kGrainCheap / std::max<int64_t>(1, kTile * n3)),
                        [&](int64_t i0, int64_t i1) {
      Out tile[kTile * kTile];  // through L1: both sides then move whole runs of kTile elements
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t o0 = item / (n1 * u_tiles), o1 = (item / u_tiles) % n1, u0 = (item % u_tiles) * kTile;
        const In* xo = x + o0 * a.s[other[0]] + o1 * a.s[other[1]];
        Out* yo = y + o0 * b.s[other[0]] + o1 * b.s[other[1]];
        const int64_t nu_t = std::min(kTile, nu - u0);
        for (int64_t j0 = 0; j0 < n3; j0 += kTile) {
          const int64_t nj_t = std::min(kTile, n3 - j0);
          for (int64_t j = 0; j < nj_t; ++j)  // source runs along u
            for (int64_t u = 0; u < nu_t; ++u) tile[u * kTile + j] = static_cast<Out>(xo[(u0 + u) + (j0 + j) * s3]);
          for (int64_t u = 0; u < nu_t; ++u)  // destination runs along j
            for (int64_t j = 0; j < nj_t; ++j) yo[(u0 + u) * su + j0 + j] = tile[u * kTile + j];
        }
      }
    });
    return;
  }
  // Rows of the innermost axis, r = (i0, i1, i2) flattened, split over the pool.
  const int64_t n3 = a.n[3], rows = a.n[0] * a.n[1] * a.n[2];
  if (n3 == 0) return;
  parallel::for_range(rows, std::max<int64_t>(1, parallel::kGrainCheap / n3), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i2 = r % a.n[2], i1 = (r / a.n[2]) % a.n[1], i0 = r / (a.n[2] * a.n[1]);
      const In* xp = x + i0 * a.s[0] + i1 * a.s[1] + i2 * a.s[2];
      Out* yp = y + i0 * b.s[0] + i1 * b.s[1] + i2 * b.s[2];
      if (a.s[3] == 1 && b.s[3] == 1)
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3] = static_cast<Out>(xp[i3]);
      else
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3 * b.s[3]] = static_cast<Out>(xp[i3 * a.s[3]]);
    }
  });
}

template <class T>
inline T apply_unary(Unary op, T x, T p) {
  switch (op) {
    case Unary::Neg: return -x;
    case Unary::Exp: return std::exp(x);
    case Unary::Log: return std::log(x);
    case Unary::Tanh: return std::tanh(x);
    case Unary::Sigmoid: return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
    case Unary::Relu: return x > 0 ? x : T(0);
    case Unary::Step: return x > 0 ? T(1) : T(0);  // relu'(0) := 0 (subgradient choice)
    case Unary::Erf: return std::erf(x);
    case Unary::Gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kSqrt1_2)));
    case Unary::GeluTanh: return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x)));
    case Unary::Softplus: return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    case Unary::Pow: return p == T(2) ? x * x : std::pow(x, p);
    case Unary::Sqrt: return std::sqrt(x);
    case Unary::Square: return x * x;
    case Unary::Abs: return std::abs(x);
    case Unary::Sign: return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);
    case Unary::GeluGrad:
      return T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    case Unary::OneMinusSquare: return T(1) - x * x;
  }
  return x;
}

template <class T, class F>
void unary_loop(const T* __restrict x, T* __restrict y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class T>
void unary_chunk(Unary op, const T* x, T* y, int64_t n, T p) {
  // Hot ops get their own loop so the compiler can vectorise them.
  switch (op) {
    case Unary::Neg: return unary_loop(x, y, n, [](T v) { return -v; });
    case Unary::Tanh: return vecmath::map(vecmath::Fn::Tanh, x, y, n);
    case Unary::Exp: return vecmath::map(vecmath::Fn::Exp, x, y, n);
    case Unary::Log: return vecmath::map(vecmath::Fn::Log, x, y, n);
    case Unary::Erf: return vecmath::map(vecmath::Fn::Erf, x, y, n);
    case Unary::Gelu: return vecmath::map(vecmath::Fn::Gelu, x, y, n);
    case Unary::GeluGrad: return vecmath::map(vecmath::Fn::GeluGrad, x, y, n);
    case Unary::Sigmoid: return vecmath::map(vecmath::Fn::Sigmoid, x, y, n);
    case Unary::Relu: return unary_loop(x, y, n, [](T v) { return v > 0 ? v : T(0); });
    case Unary::Square: return unary_loop(x, y, n, [](T v) { return v * v; });
    case Unary::OneMinusSquare: return unary_loop(x, y, n, [](T v) { return T(1) - v * v; });
    default: return unary_loop(x, y, n, [op, p](T v) { return apply_unary<T>(op, v, p); });
  }
}

constexpr bool is_cheap(Unary op) {
  return op == Unary::Neg || op == Unary::Relu || op == Unary::Step || op == Unary::Square ||
         op == Unary::Abs || op == Unary::Sign || op == Unary::OneMinusSquare;
}

template <class T>
void unary_typed(Unary op, const T* x, T* y, int64_t n, T p) {
  const int64_t grain = is_cheap(op) ? parallel::grain_for<T>(parallel::kGrainCheap) : parallel::transcend_grain<T>();
  parallel::for_range(n, grain, [&](int64_t b, int64_t e) { unary_chunk(op, x + b, y + b, e - b, p); });
}

template <class T>
inline T apply_binary(Binary op, T a, T b) {
  switch (op) {
    case Binary::Add: return a + b;
    case Binary::Sub: return a - b;
    case Binary::Mul: return a * b;
    case Binary::Div: return a / b;
    case Binary::MulOneMinusSquare: return a * (T(1) - b * b);
  }
  return a;
}

template <class T, class F>
void binary_loops(const Array& A, const Array& B, Array& out, F f) {
  const T* a = A.data<T>();
  const T* b = B.data<T>();
  T* y = out.data<T>();
  int64_t n = out.numel();
  using parallel::for_range;
  const int64_t grain = parallel::grain_for<T>(parallel::kGrainCheap);
  if (A.shape() == B.shape() && A.is_contiguous() && B.is_contiguous()) {
    for_range(n, grain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = f(a[i], b[i]);
    });
    return;
  }
  if (B.numel() == 1 && A.is_contiguous() && A.shape() == out.shape()) {
    const T sc = *b;
    for_range(n, grain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = f(a[i], sc);
    });
    return;
  }
  if (A.numel() == 1 && B.is_contiguous() && B.shape() == out.shape()) {
    const T sc = *a;
    for_range(n, grain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = f(sc, b[i]);
    });
    return;
  }
  // Broadcast or strided: rows of the innermost axis, r = (i0, i1, i2) flattened.
  const Strided4 da = pad4(A.shape(), A.strides(), out.shape());
  const Strided4 db = pad4(B.shape(), B.strides(), out.shape());
  const int64_t n3 = da.n[3], rows = da.n[0] * da.n[1] * da.n[2];
  if (n3 == 0) return;
  for_range(rows, std::max<int64_t>(1, grain / n3), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i2 = r % da.n[2], i1 = (r / da.n[2]) % da.n[1], i0 = r / (da.n[2] * da.n[1]);
      const T* ap = a + i0 * da.s[0] + i1 * da.s[1] + i2 * da.s[2];
      const T* bp = b + i0 * db.s[0] + i1 * db.s[1] + i2 * db.s[2];
      T* yp = y + r * n3;
      const int64_t sa = da.s[3], sb = db.s[3];
      if (sa == 1 && sb == 1)
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3] = f(ap[i3], bp[i3]);
      else if (sa == 1 && sb == 0)
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3] = f(ap[i3], *bp);
      else if (sa == 0 && sb == 1)
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3] = f(*ap, bp[i3]);
      else
        for (int64_t i3 = 0; i3 < n3; ++i3) yp[i3] = f(ap[i3 * sa], bp[i3 * sb]);
    }
  });
}

void require_float(const Array& x, const char* op) {
  if (!is_float(x.dtype())) throw_type(op, ": expected a float32 or float64 tensor, got ", dtype_name(x.dtype()));
}

}  // namespace

Strided4 pad4(const Shape& shape, const Shape& strides, const Shape& out_shape) {
  Strided4 d;
  int off = 4 - static_cast<int>(out_shape.size());
  int off_in = static_cast<int>(out_shape.size() - shape.size());
  for (int i = 0; i < 4; ++i) {
    d.n[i] = i < off ? 1 : out_shape[i - off];
    int j = i - off - off_in;  // index into the input's dims
    d.s[i] = (j < 0 || shape[j] == 1) ? 0 : strides[j];
  }
  return d;
}

void fill(Array& a, double value) {
  if (DeviceBackend* be = backend_for(a.device())) return be->fill(a, value);
  int64_t n = a.numel();
  dispatch_all(a.dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = a.data<T>();
    std::fill(p, p + n, static_cast<T>(value));
  });
}

void copy(const Array& src, Array& dst) {
  if (src.shape() != dst.shape()) throw_value("copy: shape ", shape_str(src.shape()), " vs ", shape_str(dst.shape()));
  if (src.device() != dst.device()) {  // across devices: move the bytes, then convert/scatter there
    Array moved = src.to(dst.device());
    return copy(moved, dst);
  }
  if (DeviceBackend* be = backend_for(src.device())) return be->copy(src, dst);
  dispatch_all(dst.dtype(), [&](auto zo) {
    dispatch_all(src.dtype(), [&](auto zi) { copy_typed<decltype(zo), decltype(zi)>(src, dst); });
  });
}

Array unary(Unary op, const Array& x, double param) {
  if (DeviceBackend* be = backend_for(x.device())) return be->unary(op, x, param);
  require_float(x, "unary op");
  Array xc = x.contiguous();
  Array y = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    unary_typed<T>(op, xc.data<T>(), y.data<T>(), xc.numel(), static_cast<T>(param));
  });
  return y;
}

Array binary(Binary op, const Array& a, const Array& b) {
  if (a.dtype() != b.dtype())
    throw_type("binary op: dtype mismatch, ", dtype_name(a.dtype()), " vs ", dtype_name(b.dtype()));
  require_float(a, "binary op");
  Shape out_shape = broadcast_shapes(a.shape(), b.shape(), "binary op");
  if (DeviceBackend* be = backend_for("binary op", {&a, &b})) return be->binary(op, a, b);  // may get a 0-d CPU operand
  Array y = Array::empty(out_shape, a.dtype());
  dispatch_float(a.dtype(), [&](auto z) {
    using T = decltype(z);
    switch (op) {
      case Binary::Add: return binary_loops<T>(a, b, y, [](T u, T v) { return u + v; });
      case Binary::Sub: return binary_loops<T>(a, b, y, [](T u, T v) { return u - v; });
      case Binary::Mul: return binary_loops<T>(a, b, y, [](T u, T v) { return u * v; });
      case Binary::Div: return binary_loops<T>(a, b, y, [](T u, T v) { return u / v; });
      case Binary::MulOneMinusSquare: return binary_loops<T>(a, b, y, [](T u, T v) { return u * (T(1) - v * v); });
    }
  });
  return y;
}

Array add_scaled(const Array& x, const Array& y, double s) {
  if (x.shape() != y.shape() || x.dtype() != y.dtype())
    throw_value("add_scaled: x and y must have one shape and dtype, got ", shape_str(x.shape()), " ",
                dtype_name(x.dtype()), " and ", shape_str(y.shape()), " ", dtype_name(y.dtype()));
  if (backend_for("add_scaled", {&x, &y})) return binary(Binary::Add, x, affine(y, s, 0.0));  // two tested kernels
  require_float(x, "add_scaled");
  Array out = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T sc = static_cast<T>(s);
    binary_loops<T>(x, y, out, [sc](T u, T v) { return u + sc * v; });
  });
  return out;
}

bool tanh_grad_mul_jvp(const Array& t, const Array& y, const Array& dt, const Array& dy, Array& out) {
  for (const Array* a : {&t, &y, &dt, &dy})
    if (a->shape() != t.shape() || a->dtype() != t.dtype() || a->device().type != DeviceType::CPU) return false;
  if (!is_float(t.dtype())) return false;
  Array tc = t.contiguous(), yc = y.contiguous(), dtc = dt.contiguous(), dyc = dy.contiguous();
  out = Array::empty(t.shape(), t.dtype());
  dispatch_float(t.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *tp = tc.data<T>(), *yp = yc.data<T>(), *dtp = dtc.data<T>(), *dyp = dyc.data<T>();
    T* op = out.data<T>();
    parallel::for_range(out.numel(), parallel::grain_for<T>(parallel::kGrainCheap), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {  // the composition's steps and roundings, one pass
        const T first = dtp[i] * (T(1) - yp[i] * yp[i]);
        const T second = T(-2) * ((tp[i] * yp[i]) * dyp[i]) + T(0);
        op[i] = first + second;
      }
    });
  });
  return true;
}

Array affine(const Array& x, double alpha, double beta) {
  if (DeviceBackend* be = backend_for(x.device())) return be->affine(x, alpha, beta);
  require_float(x, "affine");
  Array xc = x.contiguous();
  Array y = Array::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    const T* xp = xc.data<T>();
    T* yp = y.data<T>();
    parallel::for_range(xc.numel(), parallel::grain_for<T>(parallel::kGrainCheap), [&](int64_t s, int64_t e) {
      unary_loop(xp + s, yp + s, e - s, [al, be](T v) { return al * v + be; });
    });
  });
  return y;
}

Array sum(const Array& x, const std::vector<int>& axes, bool keepdims) {
  require_float(x, "sum");
  if (DeviceBackend* be = backend_for(x.device())) {
    std::vector<bool> red(x.ndim(), false);
    for (int a : axes) red[normalize_axis(a, x.ndim(), "sum")] = true;
    // Leading axes of a contiguous array (bias gradients: a sum over the batch): one GEMM with a
    // row of ones. A device's BLAS spreads that over the whole chip; a column reduction does not.
    int lead = 0;
    while (lead < x.ndim() && red[lead]) ++lead;
    bool leading = lead > 0 && x.is_contiguous();
    for (int i = lead; i < x.ndim(); ++i) leading &= !red[i];
    const int64_t n_red = numel_of(Shape(x.shape().begin(), x.shape().begin() + lead));
    if (leading && lead < x.ndim() && n_red > 1 && x.numel() > 0 && be->sums_through_gemm(x.dtype())) {
      Shape kept(x.shape().begin() + lead, x.shape().end()), kshape = x.shape();
      for (int i = 0; i < lead; ++i) kshape[i] = 1;
      Array ones = Array::full({1, n_red}, x.dtype(), 1.0, x.device());
      Array s = matmul(ones, x.reshape_view({n_red, x.numel() / n_red}));
      return s.reshape_view(keepdims ? kshape : kept);
    }
    // Everything of a large contiguous array (a loss): rows in parallel first, then their sums.
    // (A device's row kernel gives one row to one block; a single row would use one block.)
    const int64_t n = x.numel();
    if (lead == x.ndim() && x.is_contiguous() && n >= (1 << 16)) {
      int64_t rows = 1;
      for (int64_t r = 1024; r >= 64 && rows == 1; --r)
        if (n % r == 0) rows = r;
      if (rows > 1) {
        Array partial = be->sum(x.reshape_view({rows, n / rows}), {1}, false);
        Shape kshape;
        for (int i = 0; i < x.ndim(); ++i) kshape.push_back(1);
        return be->sum(partial, {0}, false).reshape_view(keepdims ? kshape : Shape{});
      }
    }
    return be->sum(x, axes, keepdims);
  }
  std::vector<bool> red(x.ndim(), false);
  for (int a : axes) red[normalize_axis(a, x.ndim(), "sum")] = true;
  Shape kshape = x.shape();
  for (int i = 0; i < x.ndim(); ++i)
    if (red[i]) kshape[i] = 1;
  Array out = Array::zeros(kshape, x.dtype());
  Shape ostr = contiguous_strides(kshape);
  for (int i = 0; i < x.ndim(); ++i)
    if (red[i]) ostr[i] = 0;
  Strided4 dx = pad4(x.shape(), x.strides(), x.shape());
  Strided4 dout = pad4(x.shape(), ostr, x.shape());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* xp0 = x.data<T>();
    T* op0 = out.data<T>();
    for (int64_t i0 = 0; i0 < dx.n[0]; ++i0)
      for (int64_t i1 = 0; i1 < dx.n[1]; ++i1)
        for (int64_t i2 = 0; i2 < dx.n[2]; ++i2) {
          const T* xp = xp0 + i0 * dx.s[0] + i1 * dx.s[1] + i2 * dx.s[2];
          T* op = op0 + i0 * dout.s[0] + i1 * dout.s[1] + i2 * dout.s[2];
          const int64_t n3 = dx.n[3], sx = dx.s[3], so = dout.s[3];
          if (so == 0) {
            double acc = 0;  // accumulate a row in double: float32 sums stay accurate
            for (int64_t i3 = 0; i3 < n3; ++i3) acc += xp[i3 * sx];
            *op += static_cast<T>(acc);
          } else {
            for (int64_t i3 = 0; i3 < n3; ++i3) op[i3 * so] += xp[i3 * sx];
          }
        }
  });
  if (keepdims) return out;
  Shape s;
  for (int i = 0; i < x.ndim(); ++i)
    if (!red[i]) s.push_back(x.shape()[i]);
  return out.reshape_view(s);
}

Array sum_to(const Array& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  if (shape.size() > x.shape().size())
    throw_value("sum_to: cannot reduce shape ", shape_str(x.shape()), " to ", shape_str(shape));
  std::vector<int> axes;
  size_t lead = x.shape().size() - shape.size();
  for (size_t i = 0; i < x.shape().size(); ++i) {
    if (i < lead) axes.push_back(static_cast<int>(i));
    else if (shape[i - lead] == 1 && x.shape()[i] != 1) axes.push_back(static_cast<int>(i));
    else if (shape[i - lead] != x.shape()[i])
      throw_value("sum_to: cannot reduce shape ", shape_str(x.shape()), " to ", shape_str(shape));
  }
  return sum(x, axes, true).reshape_view(shape);
}

Array max(const Array& x, int axis, bool keepdims) {
  require_float(x, "max");
  int ax = normalize_axis(axis, x.ndim(), "max");
  if (DeviceBackend* be = backend_for(x.device())) return be->max(x, ax, keepdims);
  std::vector<int> perm;
  for (int i = 0; i < x.ndim(); ++i)
    if (i != ax) perm.push_back(i);
  perm.push_back(ax);
  Array xt = x.permute_view(perm).contiguous();
  int64_t n = x.shape()[ax], rows = n ? xt.numel() / n : 0;
  Shape ks = x.shape();
  ks[ax] = 1;
  Array out = Array::empty(ks, x.dtype());
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* p = xt.data<T>();
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, p[r * n + j]);
      o[r] = m;
    }
  });
  if (keepdims) return out;
  Shape s = x.shape();
  s.erase(s.begin() + ax);
  return out.reshape_view(s);
}

// ---- matmul -------------------------------------------------------------------------------
GemmLayout gemm_layout(const Array& a) {
  int nd = a.ndim();
  int64_t rows = a.shape()[nd - 2], cols = a.shape()[nd - 1];
  int64_t rs = a.strides()[nd - 2], cs = a.strides()[nd - 1];
  if ((cs == 1 || cols == 1) && (rs >= std::max<int64_t>(cols, 1) || rows == 1))
    return {true, false, std::max<int64_t>(rows == 1 ? cols : rs, 1)};
  if ((rs == 1 || rows == 1) && (cs >= std::max<int64_t>(rows, 1) || cols == 1))
    return {true, true, std::max<int64_t>(cols == 1 ? rows : cs, 1)};
  return {false, false, 0};
}

MatmulShapes matmul_shapes(const Array& a_in, const Array& b_in) {
  if (a_in.dtype() != b_in.dtype())
    throw_type("matmul: dtype mismatch, ", dtype_name(a_in.dtype()), " vs ", dtype_name(b_in.dtype()));
  require_float(a_in, "matmul");
  if (a_in.ndim() == 0 || b_in.ndim() == 0) throw_value("matmul: operands must be at least 1-d, got 0-d");
  // Promote 1-D operands as NumPy does; the promoted dims are dropped from the result.
  MatmulShapes r;
  Array a = a_in.ndim() == 1 ? a_in.reshape_view({1, a_in.shape()[0]}) : a_in;
  Array b = b_in.ndim() == 1 ? b_in.reshape_view({b_in.shape()[0], 1}) : b_in;
  int64_t M = a.shape()[a.ndim() - 2], K = a.shape()[a.ndim() - 1];
  int64_t K2 = b.shape()[b.ndim() - 2], N = b.shape()[b.ndim() - 1];
  if (K != K2)
    throw_value("matmul: shapes ", shape_str(a_in.shape()), " and ", shape_str(b_in.shape()),
                " are not aligned (", K, " != ", K2, ")");
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(ba, bb, "matmul");
  } catch (const ValueError&) {
    throw_value("matmul: batch dims of shapes ", shape_str(a_in.shape()), " and ", shape_str(b_in.shape()),
                " cannot be broadcast together");
  }
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Shape final_shape = batch;
  if (a_in.ndim() > 1) final_shape.push_back(M);
  if (b_in.ndim() > 1) final_shape.push_back(N);
  if (out_shape.size() > static_cast<size_t>(kMaxDims) + 1)
    throw_value("matmul: result would have more than ", kMaxDims, " dims");

  r.a = a;
  r.b = b;
  r.M = M;
  r.K = K;
  r.N = N;
  r.batch_a = ba;
  r.batch_b = bb;
  r.batch = batch;
  r.out_shape = out_shape;
  r.final_shape = final_shape;
  return r;
}

Array matmul(const Array& a_in, const Array& b_in, const Array* acc, Array* into) {
  if (DeviceBackend* be = backend_for("matmul", {&a_in, &b_in, acc})) {
    Device d = a_in.device().type != DeviceType::CPU ? a_in.device() : b_in.device();
    Array acc_d = acc ? acc->to(d) : Array();  // a 0-d CPU accumulator travels with the op
    return be->matmul(a_in, b_in, acc ? &acc_d : nullptr);
  }
  MatmulShapes ms = matmul_shapes(a_in, b_in);
  Array a = ms.a, b = ms.b;
  int64_t M = ms.M, K = ms.K, N = ms.N;
  const Shape &ba = ms.batch_a, &bb = ms.batch_b, &out_shape = ms.out_shape, &final_shape = ms.final_shape;
  Shape batch = ms.batch;

  // The result starts as the accumulator (broadcast, copied) and the GEMMs add to it (beta = 1).
  Array out;
  if (acc) {
    if (acc->dtype() != a.dtype())
      throw_type("addmm: dtype mismatch, ", dtype_name(acc->dtype()), " vs ", dtype_name(a.dtype()));
    out = acc->broadcast_view(final_shape).clone().reshape_view(out_shape);
  } else {
    out = into && into->is_contiguous() && into->dtype() == a.dtype() && numel_of(into->shape()) == numel_of(out_shape)
              ? into->reshape_view(out_shape)  // caller's buffer (e.g. a slice of a flat gradient)
              : Array::empty(out_shape, a.dtype());
  }
  if (M == 0 || N == 0) return out.reshape_view(final_shape);
  if (K == 0) {
    if (!acc) fill(out, 0.0);
    return out.reshape_view(final_shape);
  }
  // Fast path: (..., M, K) @ (K, N) with a row-contiguous `a` is one GEMM of (batch*M, K) @ (K, N).
  int64_t nbatch = numel_of(batch);
  if (numel_of(bb) == 1 && nbatch > 1 && a.is_contiguous() && static_cast<int64_t>(numel_of(ba)) == nbatch) {
    M *= nbatch;
    nbatch = 1;
    batch = Shape{};
    a = a.reshape_view({M, K});
    b = b.ndim() > 2 ? b.contiguous().reshape_view({K, N}) : b;
  }
  GemmLayout la = gemm_layout(a), lb = gemm_layout(b);
  if (!la.ok) { a = a.contiguous(); la = gemm_layout(a); }
  if (!lb.ok) { b = b.contiguous(); lb = gemm_layout(b); }
  // Broadcast strides over the (padded) batch dims.
  int nb = static_cast<int>(batch.size());
  std::vector<int64_t> sa(nb, 0), sb(nb, 0), nbat(batch.begin(), batch.end());
  for (int i = 0; i < nb; ++i) {
    int ia = i - (nb - static_cast<int>(ba.size())), ib = i - (nb - static_cast<int>(bb.size()));
    if (ia >= 0 && ba[ia] != 1) sa[i] = a.strides()[ia];
    if (ib >= 0 && bb[ib] != 1) sb[i] = b.strides()[ib];
  }
  // Merge the innermost batch dims that step evenly in both operands (e.g. (B, H) of a contiguous
  // (B, H, T, d)) into one group, run as one batched GEMM call per outer index.
  int64_t group = nb ? nbat[nb - 1] : 1;
  int outer = nb - 1;
  while (outer > 0 && sa[outer - 1] == sa[outer] * nbat[outer] && sb[outer - 1] == sb[outer] * nbat[outer]) {
    group *= nbat[outer - 1];
    --outer;
  }
  const bool batched = nb > 0 && detail::batch_pays(group, M, N, K);
  const int n_loop = batched ? outer : nb;  // dims walked one by one
  dispatch_float(a.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* A = a.data<T>();
    const T* B = b.data<T>();
    T* C = out.data<T>();
    const T beta = acc ? T(1) : T(0);
    const auto ta = la.trans ? CblasTrans : CblasNoTrans, tb = lb.trans ? CblasTrans : CblasNoTrans;
    const int64_t per_call = batched ? group : 1, calls = nbatch / per_call;
    std::vector<int64_t> idx(nb, 0);
    for (int64_t t = 0; t < calls; ++t) {
      int64_t oa = 0, ob = 0;
      for (int i = 0; i < n_loop; ++i) { oa += idx[i] * sa[i]; ob += idx[i] * sb[i]; }
      T* Ct = C + t * per_call * M * N;
      if (batched)
        detail::gemm_batch_strided<T>(ta, tb, M, N, K, T(1), A + oa, la.ld, sa[nb - 1], B + ob, lb.ld, sb[nb - 1], beta,
                                      Ct, N, M * N, group);
      else
        detail::gemm<T>(ta, tb, M, N, K, T(1), A + oa, la.ld, B + ob, lb.ld, beta, Ct, N);
      for (int i = n_loop - 1; i >= 0; --i) {
        if (++idx[i] < nbat[i]) break;
        idx[i] = 0;
      }
    }
  });
  return out.reshape_view(final_shape);
}

// ---- two products side by side ---------------------------------------------------------------
namespace {
// a (..., M, K) @ b (K, N) as one 2-D GEMM, a's leading dims folded into M.
struct FoldedProduct {
  Array a, b;
  GemmLayout la, lb;
  int64_t M = 0, N = 0, K = 0;
  Shape out_shape;
};

bool fold_product(const Array& a_in, const Array& b_in, FoldedProduct& f) {
  if (a_in.ndim() < 2 || b_in.ndim() != 2 || a_in.dtype() != b_in.dtype() || !is_float(a_in.dtype()) ||
      a_in.device().type != DeviceType::CPU || b_in.device().type != DeviceType::CPU)
    return false;
  f.K = a_in.shape().back();
  f.N = b_in.shape()[1];
  if (b_in.shape()[0] != f.K || a_in.numel() == 0 || f.N == 0) return false;
  f.M = a_in.numel() / f.K;
  f.a = a_in.ndim() == 2 ? a_in : a_in.contiguous().reshape_view({f.M, f.K});
  f.b = b_in;
  f.la = gemm_layout(f.a);
  if (!f.la.ok) { f.a = f.a.contiguous(); f.la = gemm_layout(f.a); }
  f.lb = gemm_layout(f.b);
  if (!f.lb.ok) { f.b = f.b.contiguous(); f.lb = gemm_layout(f.b); }
  f.out_shape = a_in.shape();
  f.out_shape.back() = f.N;
  return true;
}

// Side by side pays on exactly two threads, for GEMMs big enough to be split at all and of
// similar size (a small one would leave its core idle while the other finishes).
bool pair_pays(const FoldedProduct& x, const FoldedProduct& y) {
  const double fx = double(x.M) * x.N * x.K, fy = double(y.M) * y.N * y.K;
  return parallel::num_threads() == 2 && std::min(fx, fy) >= double(1 << 20) && std::min(fx, fy) >= 0.6 * std::max(fx, fy);
}

template <class T>
detail::GemmCall<T> gemm_call(const FoldedProduct& f, T beta, Array& out) {
  return {f.la.trans ? CblasTrans : CblasNoTrans, f.lb.trans ? CblasTrans : CblasNoTrans, f.M, f.N, f.K,
          f.a.data<T>(), f.la.ld, f.b.data<T>(), f.lb.ld, beta, out.data<T>(), f.N};
}

// The two GEMMs side by side where that pays, else one after the other (each over all threads):
// the same arithmetic either way, so results do not depend on the thread count.
template <class T>
void two_gemms(const detail::GemmCall<T>& x, const detail::GemmCall<T>& y, bool side_by_side) {
  if (side_by_side) return detail::gemm_pair<T>(x, y);
  for (const auto* c : {&x, &y})
    detail::gemm<T>(c->ta, c->tb, c->M, c->N, c->K, T(1), c->A, c->lda, c->B, c->ldb, c->beta, c->C, c->ldc);
}
}  // namespace

bool matmul_pair(const Array& a1, const Array& b1, const Array& a2, const Array& b2, Array& p1, Array& p2) {
  FoldedProduct x, y;
  if (!fold_product(a1, b1, x) || !fold_product(a2, b2, y) || x.a.dtype() != y.a.dtype() || !pair_pays(x, y))
    return false;  // two independent products: plain matmuls give the same bits
  p1 = Array::empty(x.out_shape, x.a.dtype());
  p2 = Array::empty(y.out_shape, y.a.dtype());
  dispatch_float(x.a.dtype(), [&](auto z) {
    using T = decltype(z);
    detail::gemm_pair<T>(gemm_call<T>(x, T(0), p1), gemm_call<T>(y, T(0), p2));
  });
  return true;
}

bool matmul_pair_sum(const Array& a1, const Array& b1, const Array& a2, const Array& b2, const Array* acc,
                     Array& out) {
  FoldedProduct x, y;
  if (!fold_product(a1, b1, x) || !fold_product(a2, b2, y) || x.a.dtype() != y.a.dtype() ||
      x.out_shape != y.out_shape)
    return false;
  if (acc) {
    if (acc->dtype() != x.a.dtype() || acc->device().type != DeviceType::CPU) return false;
    try {
      if (broadcast_shapes(acc->shape(), x.out_shape, "addmm") != x.out_shape) return false;
    } catch (const ValueError&) {
      return false;
    }
  }
  // The first product accumulates onto a copy of acc (beta = 1), the second goes to a scratch
  // buffer that one pass then adds in.
  out = acc ? acc->broadcast_view(x.out_shape).clone() : Array::empty(x.out_shape, x.a.dtype());
  Array second = Array::empty(y.out_shape, y.a.dtype());
  dispatch_float(x.a.dtype(), [&](auto z) {
    using T = decltype(z);
    two_gemms<T>(gemm_call<T>(x, acc ? T(1) : T(0), out), gemm_call<T>(y, T(0), second), pair_pays(x, y));
    T* o = out.data<T>();
    const T* s2 = second.data<T>();
    parallel::for_range(out.numel(), parallel::grain_for<T>(parallel::kGrainCheap), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) o[i] += s2[i];
    });
  });
  return true;
}

// ---- softmax ------------------------------------------------------------------------------
namespace {
template <class F>
Array along_last_axis(const Array& x, int axis, const char* op, F&& rows_fn) {
  require_float(x, op);
  if (x.ndim() == 0) throw_value(op, ": needs at least a 1-d tensor");
  int ax = normalize_axis(axis, x.ndim(), op);
  std::vector<int> perm;
  for (int i = 0; i < x.ndim(); ++i)
    if (i != ax) perm.push_back(i);
  perm.push_back(ax);
  Array xt = x.permute_view(perm).contiguous();
  Array yt = Array::empty(xt.shape(), x.dtype());
  int64_t n = x.shape()[ax], rows = n ? xt.numel() / n : 0;
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    T *xp = xt.data<T>(), *yp = yt.data<T>();
    parallel::for_range(rows, std::max<int64_t>(1, parallel::kGrainTranscend / std::max<int64_t>(1, n)),
                        [&](int64_t r0, int64_t r1) { rows_fn(xp + r0 * n, yp + r0 * n, r1 - r0, n); });
  });
  if (ax == x.ndim() - 1) return yt;
  std::vector<int> inv(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) inv[perm[i]] = i;
  return yt.permute_view(inv).contiguous();
}
}  // namespace

Array softmax(const Array& x, int axis) {
  if (DeviceBackend* be = backend_for(x.device())) return be->softmax(x, normalize_axis(axis, std::max(x.ndim(), 1), "softmax"), false);
  return along_last_axis(x, axis, "softmax", [](auto* p, auto* y, int64_t rows, int64_t n) {
    using T = std::remove_pointer_t<decltype(p)>;
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = p + r * n;
      T* yr = y + r * n;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
      if (std::isinf(m) && m < 0) m = 0;  // fully masked row: avoid inf - inf
      T s = 0;
      for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - m;
      vecmath::map(vecmath::Fn::Exp, yr, yr, n);
      for (int64_t j = 0; j < n; ++j) s += yr[j];
      const T inv = s > 0 ? T(1) / s : T(0);  // a fully masked row (all -inf) has no mass: zeros
      for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
    }
  });
}

Array log_softmax(const Array& x, int axis) {
  if (DeviceBackend* be = backend_for(x.device())) return be->softmax(x, normalize_axis(axis, std::max(x.ndim(), 1), "log_softmax"), true);
  return along_last_axis(x, axis, "log_softmax", [](auto* p, auto* y, int64_t rows, int64_t n) {
    using T = std::remove_pointer_t<decltype(p)>;
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = p + r * n;
      T* yr = y + r * n;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
      if (std::isinf(m) && m < 0) m = 0;
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(xr[j] - m));
      const T lse = m + static_cast<T>(std::log(s));
      for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - lse;
    }
  });
}

Array one_hot(const Array& labels, int64_t num_classes, DType dtype) {
  if (labels.dtype() != DType::Int64) throw_type("one_hot: labels must be int64, got ", dtype_name(labels.dtype()));
  if (DeviceBackend* be = backend_for(labels.device())) return be->one_hot(labels, num_classes, dtype);
  Array lc = labels.contiguous();
  Shape s = labels.shape();
  s.push_back(num_classes);
  Array out = Array::zeros(s, dtype);
  const int64_t* l = lc.data<int64_t>();
  int64_t n = lc.numel();
  for (int64_t i = 0; i < n; ++i)
    if (l[i] < 0 || l[i] >= num_classes)
      throw_value("cross_entropy: label ", l[i], " at position ", i, " is outside [0, ", num_classes, ")");
  dispatch_float(dtype, [&](auto z) {
    using T = decltype(z);
    T* o = out.data<T>();
    for (int64_t i = 0; i < n; ++i) o[i * num_classes + l[i]] = T(1);
  });
  return out;
}

Array causal_mask(int64_t T_, int64_t S, DType dtype, Device device) {
  if (DeviceBackend* be = backend_for(device)) return be->causal_mask(T_, S, dtype, device);
  Array m = Array::empty({T_, S}, dtype);
  dispatch_float(dtype, [&](auto z) {
    using T = decltype(z);
    T* p = m.data<T>();
    for (int64_t t = 0; t < T_; ++t)
      for (int64_t s = 0; s < S; ++s) p[t * S + s] = s <= t + (S - T_) ? T(0) : -std::numeric_limits<T>::infinity();
  });
  return m;
}

bool all_finite(const Array& x) {
  if (!is_float(x.dtype())) return true;
  if (DeviceBackend* be = backend_for(x.device())) return be->all_finite(x);
  Array xc = x.contiguous();
  std::atomic<bool> ok{true};
  dispatch_float(x.dtype(), [&](auto z) {
    using T = decltype(z);
    // Inf or NaN <=> all exponent bits set: an integer test the compiler vectorises (std::isfinite
    // it did not: jl.jvp checks every tangent, and that scalar loop was ~1% of an MLP JVP).
    using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
    constexpr Bits exponent = sizeof(T) == 8 ? Bits(0x7ff0000000000000ull) : Bits(0x7f800000u);
    const T* p = xc.data<T>();
    parallel::for_range(xc.numel(), parallel::grain_for<T>(parallel::kGrainCheap), [&](int64_t b, int64_t e) {
      Bits bad = 0;
      for (int64_t i = b; i < e; ++i) {
        Bits bits;
        std::memcpy(&bits, p + i, sizeof bits);
        bad |= Bits((bits & exponent) == exponent);
      }
      if (bad) ok.store(false, std::memory_order_relaxed);
    });
  });
  return ok.load();
}

}  // namespace jaclab::kernels

namespace jaclab::blas {
int num_threads() { return scipy_openblas_get_num_threads(); }
void set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
// OpenBLAS runs on one thread (jaclab/parallel.h), so long vectors are split over the pool here.
// Pieces of a fixed length (not a fraction of the thread count) keep dot's summation order, and
// so its bits, the same at any thread count. BLAS-1 takes a 32-bit length (scipy-openblas32):
// the pieces are far below that.
constexpr int64_t kPiece = int64_t{1} << 16;
double dot(int64_t n, const double* x, const double* y) {
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  std::vector<double> part(static_cast<size_t>(pieces));
  parallel::for_range(pieces, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      part[p] = JL_CBLAS(ddot)(static_cast<blasint>(std::min(kPiece, n - p * kPiece)), x + p * kPiece, 1,
                               y + p * kPiece, 1);
  }, 1);
  double s = 0.0;
  for (double v : part) s += v;
  return s;
}
void axpy(int64_t n, double alpha, const double* x, double* y) {
  parallel::for_range(n, 4 * kPiece, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i += kPiece)
      JL_CBLAS(daxpy)(static_cast<blasint>(std::min(kPiece, e - i)), alpha, x + i, 1, y + i, 1);
  });
}
void scal(int64_t n, double alpha, double* x) {
  parallel::for_range(n, 4 * kPiece, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i += kPiece) JL_CBLAS(dscal)(static_cast<blasint>(std::min(kPiece, e - i)), alpha, x + i, 1);
  });
}
void tridiagonal_eigh(int64_t n, double* d, double* e, double* z) {
  if (n <= 0) return;
  const lapack_int info = scipy_LAPACKE_dstev(LAPACK_ROW_MAJOR, 'V', static_cast<lapack_int>(n), d, e, z,
                                              static_cast<lapack_int>(n));
  if (info != 0)
    throw std::runtime_error(str_cat("tridiagonal_eigh: LAPACK dstev failed (info ", info, ") for n = ", n));
}
void singular_values(int64_t count, int64_t m, int64_t n, double* a, double* s) {
  const int64_t k = std::min(m, n);
  if (count <= 0 || k == 0) return;
  std::atomic<lapack_int> failed{0};
  kernels::detail::side_by_side(count, [&](int64_t i) {
    const lapack_int info = scipy_LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', static_cast<lapack_int>(m),
                                                 static_cast<lapack_int>(n), a + i * m * n, static_cast<lapack_int>(n),
                                                 s + i * k, nullptr, 1, nullptr, 1);
    if (info != 0) failed.store(info);
  });
  if (const lapack_int info = failed.load())
    throw std::runtime_error(str_cat("singular_values: LAPACK dgesdd failed (info ", info, ") for ", count,
                                     " matrices of ", m, " x ", n));
}
const char* name() {
  static std::string s = std::string("scipy-openblas32 (") + scipy_openblas_get_config() + ", core " +
                         scipy_openblas_get_corename() + ")";
  return s.c_str();
}
}  // namespace jaclab::blas
