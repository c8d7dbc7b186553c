// Error types. The Python bindings map them to ValueError / TypeError / RuntimeError.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace jaclab {

// Bad shapes, axes, values (maps to ValueError).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Bad dtypes or argument kinds (maps to TypeError).
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// A batched pass (K directions at once) that an op cannot carry, e.g. because the batched
// values would exceed 4-D. Callers may retry one direction at a time (maps to a ValueError
// subclass, jaclab.UnbatchableError).
struct UnbatchableError : ValueError {
  using ValueError::ValueError;
};

namespace detail {
inline void cat(std::ostringstream&) {}
template <class T, class... R>
void cat(std::ostringstream& os, const T& v, const R&... r) {
  os << v;
  cat(os, r...);
}
}  // namespace detail

template <class... A>
std::string str_cat(const A&... a) {
  std::ostringstream os;
  detail::cat(os, a...);
  return os.str();
}

template <class... A>
[[noreturn]] void throw_value(const A&... a) { throw ValueError(str_cat(a...)); }
template <class... A>
[[noreturn]] void throw_type(const A&... a) { throw TypeError(str_cat(a...)); }

}  // namespace jaclab
