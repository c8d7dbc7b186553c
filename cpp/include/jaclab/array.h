// Array: a plain n-d array (no autograd). Row-major, strided, reference-counted storage.
// Shapes and strides are in elements; up to kMaxDims dimensions (0-d scalars allowed).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "jaclab/errors.h"
#include "jaclab/shape.h"

namespace jaclab {

constexpr int kMaxDims = 4;  // public contract: tensors are up to 4-D

enum class DType : uint8_t { Float32, Float64, Int64 };
enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

Device parse_device(const std::string& s);  // "cpu", "cuda", "cuda:N"
size_t dtype_size(DType d);
const char* dtype_name(DType d);
bool is_float(DType d);
std::string shape_str(const Shape& s);
int64_t numel_of(const Shape& s);
Shape contiguous_strides(const Shape& s);

// Raw memory. `owner` keeps foreign memory (a NumPy array, a DLPack producer) alive;
// memory we allocate ourselves is owned the same way (owner frees it).
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::shared_ptr<void> owner;  // foreign memory: released with the storage
  size_t own_block = 0;         // our own allocation (block size), returned to the allocator
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

class Array {
 public:
  Array() = default;
  // Fresh, uninitialised, contiguous array (CPU unless a device is given).
  static Array empty(const Shape& shape, DType dtype, Device device = {});
  static Array zeros(const Shape& shape, DType dtype, Device device = {});
  static Array full(const Shape& shape, DType dtype, double value, Device device = {});
  static Array scalar(double value, DType dtype, Device device = {}) { return full({}, dtype, value, device); }
  // Wrap foreign memory without copying; `owner` is released when the last view dies.
  static Array from_blob(void* data, const Shape& shape, const Shape& strides, DType dtype,
                         Device device, std::shared_ptr<void> owner);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_of(shape_); }
  int64_t size(int axis) const;
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device{}; }
  int64_t offset() const { return offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool is_contiguous() const;

  void* raw() const;
  template <class T>
  T* data() const { return static_cast<T*>(raw()); }

  // Views (no copy).
  Array reshape_view(const Shape& shape) const;  // requires contiguous
  Array permute_view(const std::vector<int>& perm) const;
  Array broadcast_view(const Shape& shape) const;  // stride-0 dims
  // Copies.
  Array contiguous() const;  // returns *this when already contiguous
  Array clone() const;
  Array astype(DType dtype) const;
  Array to(Device device) const;  // a contiguous copy on `device` (returns *this when already there)
  double item() const;  // value of a 1-element array, as double (copied to the host if need be)

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_, strides_;
  DType dtype_ = DType::Float64;
};

// Normalise a possibly negative axis; throws ValueError naming the op when out of range.
int normalize_axis(int axis, int ndim, const char* op);
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// The host block cache (array.cpp): freed blocks are kept for reuse by size, up to 512 MiB,
// since derivative code allocates the same shapes again and again.
size_t cached_host_bytes();           // bytes held idle now (large blocks; small ones of this thread)
size_t release_cached_host_memory();  // returns them to the system; the number of bytes released

}  // namespace jaclab
