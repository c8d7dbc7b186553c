// Tensor: an Array plus what autodiff needs to know about it.
//   grad_fn  - the graph node that produced it (reverse mode); null for constants.
//   tangents - forward-mode tangents, one per active jvp level (a level is one jvp call; nested
//              jvps get increasing levels). A missing tangent is a symbolic zero.
// Tensors are immutable values; copies are cheap handles sharing one implementation.
#pragma once
#include <memory>
#include <utility>
#include <vector>

#include "jaclab/array.h"

namespace jaclab {

struct Node;
class Tensor;

struct TensorImpl {
  Array value;
  std::shared_ptr<Node> grad_fn;
  std::vector<std::pair<int, Tensor>> tangents;  // sorted by level
};

class Tensor {
 public:
  Tensor() = default;  // "undefined": stands for a symbolic zero in derivative rules
  explicit Tensor(Array value);
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Array& value() const { return impl_->value; }
  const Shape& shape() const { return impl_->value.shape(); }
  DType dtype() const { return impl_->value.dtype(); }
  Device device() const { return impl_->value.device(); }
  int ndim() const { return impl_->value.ndim(); }
  int64_t numel() const { return impl_->value.numel(); }
  double item() const { return impl_->value.item(); }

  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  bool requires_grad() const { return impl_->grad_fn != nullptr; }
  bool has_tangents() const { return !impl_->tangents.empty(); }
  const std::vector<std::pair<int, Tensor>>& tangents() const { return impl_->tangents; }
  int max_level() const { return impl_->tangents.empty() ? -1 : impl_->tangents.back().first; }
  // Tangent at `level`, or an undefined Tensor (zero) if there is none.
  Tensor tangent(int level) const;

  // Aliases: share value and graph node, differ only in their tangents.
  Tensor with_tangent(int level, const Tensor& t) const;
  Tensor strip_levels_from(int level) const;  // drops tangents with level >= `level` (may return *this)
  Tensor alias_below(int level) const;        // always a new alias, keeping tangents with level < `level`
  Tensor detach() const { return Tensor(impl_->value); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::string describe(const Tensor& t);  // "float64 tensor of shape (3, 4)"

}  // namespace jaclab
