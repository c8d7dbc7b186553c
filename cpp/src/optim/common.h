// Helpers shared by the update rules (internal).
#pragma once
#include <cmath>

#include "jaclab/optim.h"

namespace jaclab::optim {

// Calls f(T{}) with T = float or double, the element type of theta.
template <class F>
void with_elem_type(DType d, F&& f) {
  if (d == DType::Float32) f(float{});
  else if (d == DType::Float64) f(double{});
  else throw_type("optimizers work on float32 or float64 parameters, not ", dtype_name(d));
}

inline Array zeros_like(const Array& a) { return Array::zeros(a.shape(), a.dtype()); }

// A scratch array like theta (contents undefined), reused across steps on this thread: slot i
// is handed out again once nobody else holds it. Saves a large allocation per step (glibc
// consolidates its free lists on every large request, which costs more than a tiny model's step).
inline Array scratch_like(const Array& theta, size_t slot) {
  thread_local std::vector<Array> pool;
  if (pool.size() <= slot) pool.resize(slot + 1);
  Array& a = pool[slot];
  if (!a.defined() || a.shape() != theta.shape() || a.dtype() != theta.dtype() || a.storage().use_count() > 1)
    a = Array::empty(theta.shape(), theta.dtype());
  return a;
}
inline Array empty_like(const Array& a) { return Array::empty(a.shape(), a.dtype()); }

// The buffer `name` of the state, created as zeros like theta when missing.
inline Array& buffer(State& s, const char* name, const Array& theta) {
  auto it = s.buffers.find(name);
  if (it == s.buffers.end()) it = s.buffers.emplace(name, zeros_like(theta)).first;
  if (it->second.shape() != theta.shape() || it->second.dtype() != theta.dtype())
    throw_value("optimizer state buffer '", name, "' does not match the parameters (", shape_str(it->second.shape()),
                " vs ", shape_str(theta.shape()), ")");
  return it->second;
}

inline void require_lr(const char* who, double lr) {
  if (!(lr > 0) || !std::isfinite(lr)) throw_value(who, ": lr must be a positive finite number, got ", lr);
}
inline void require_unit(const char* who, const char* what, double v) {
  if (!(v >= 0 && v < 1)) throw_value(who, ": ", what, " must be in [0, 1), got ", v);
}

}  // namespace jaclab::optim
