// Shape: a small inline vector of int64 (no heap allocation). Shapes and strides of every
// array are Shapes, so allocating temporaries costs one block, not three.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "jaclab/errors.h"

namespace jaclab {

class Shape {
 public:
  static constexpr int kCapacity = 8;  // tensors are <= 4-D; intermediate shapes stay well below 8
  using value_type = int64_t;
  using iterator = int64_t*;
  using const_iterator = const int64_t*;

  Shape() = default;
  explicit Shape(size_t n, int64_t v = 0) { assign(n, v); }
  Shape(std::initializer_list<int64_t> l) : Shape(l.begin(), l.end()) {}
  template <class It>
  Shape(It first, It last) {
    for (; first != last; ++first) push_back(static_cast<int64_t>(*first));
  }

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t* data() { return v_; }
  const int64_t* data() const { return v_; }
  int64_t* begin() { return v_; }
  int64_t* end() { return v_ + n_; }
  const int64_t* begin() const { return v_; }
  const int64_t* end() const { return v_ + n_; }
  int64_t& operator[](size_t i) { return v_[i]; }
  const int64_t& operator[](size_t i) const { return v_[i]; }
  int64_t& back() { return v_[n_ - 1]; }
  const int64_t& back() const { return v_[n_ - 1]; }

  void push_back(int64_t x) {
    if (n_ == kCapacity) throw ValueError(str_cat("shapes have at most ", kCapacity, " dimensions"));
    v_[n_++] = x;
  }
  void pop_back() { --n_; }
  void assign(size_t n, int64_t x) {
    if (n > static_cast<size_t>(kCapacity)) throw ValueError(str_cat("shapes have at most ", kCapacity, " dimensions"));
    n_ = static_cast<int>(n);
    std::fill(v_, v_ + n_, x);
  }
  void resize(size_t n, int64_t x = 0) {
    size_t old = n_;
    assign(n, 0);
    n_ = static_cast<int>(old);
    for (size_t i = old; i < n; ++i) v_[i] = x;
    n_ = static_cast<int>(n);
  }
  int64_t* erase(int64_t* pos) {
    std::copy(pos + 1, end(), pos);
    --n_;
    return pos;
  }
  void clear() { n_ = 0; }

  bool operator==(const Shape& o) const { return n_ == o.n_ && std::equal(begin(), end(), o.begin()); }
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  int64_t v_[kCapacity] = {};
  int n_ = 0;
};

}  // namespace jaclab
