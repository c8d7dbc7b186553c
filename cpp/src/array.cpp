#include "jaclab/array.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <iterator>
#include <map>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "jaclab/backend.h"
#include "jaclab/kernels.h"

namespace jaclab {

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : str_cat("cuda:", index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device{};
  if (s == "cuda") return Device{DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device{DeviceType::CUDA, std::stoi(s.substr(5))};
  throw_value("unknown device '", s, "': expected 'cpu', 'cuda' or 'cuda:N'");
}

size_t dtype_size(DType d) { return d == DType::Float32 ? 4 : 8; }
const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "?";
}
bool is_float(DType d) { return d != DType::Int64; }

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += std::to_string(s[i]) + (s.size() == 1 ? "," : i + 1 < s.size() ? ", " : "");
  return r + ")";
}
int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

int normalize_axis(int axis, int ndim, const char* op) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) throw_value(op, ": axis ", axis, " is out of range for a ", ndim, "-d tensor");
  return a;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw_value(op, ": shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

static void check_rank(const Shape& shape) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    throw_value("jaclab tensors have at most ", kMaxDims, " dimensions, got shape ", shape_str(shape));
  for (auto d : shape)
    if (d < 0) throw_value("negative dimension in shape ", shape_str(shape));
}

namespace {
// Large blocks are recycled by size (mapped ones, from 16 MiB, also for requests down to half
// their size): derivative computations allocate the same shapes over and over, and returning
// them to the OS (glibc unmaps big blocks) costs a page fault per 4 KiB on every reuse. Small
// blocks (< 64 KiB) are recycled per thread without a lock: a batch-1 training step allocates
// dozens of them. Both caches are bounded.
class BlockCache {
 public:
  static BlockCache& get() {
    static BlockCache* cache = new BlockCache();  // never destroyed: blocks may outlive statics
    return *cache;
  }
  // A block of at least `bytes`; `bytes` is set to the size of the block returned.
  void* take(size_t& bytes) {
    if (bytes < kMinCached) {  // small: a per-thread free list per 64-byte size class
      auto& list = small().lists[bytes / 64];
      if (!list.empty()) {
        void* p = list.back();
        list.pop_back();
        small().bytes -= bytes;
        return p;
      }
    }
    if (bytes >= kMinCached) {
      std::lock_guard<std::mutex> lock(mutex_);
      // Exact size; for mapped blocks the smallest one up to twice the size: populating a fresh
      // mapping costs ~0.3 ms per MB, so a Lanczos basis of 35 rows can reuse the one of 60
      // rows that an earlier call left (and alternating sizes map nothing new).
      auto it = free_.lower_bound(bytes);
      const bool fits = it != free_.end() && (it->first == bytes || (bytes >= kMapped && it->first <= 2 * bytes));
      if (fits) {
        void* p = it->second;
        bytes = it->first;
        free_.erase(it);
        (bytes >= kMapped ? cached_mapped_ : cached_heap_) -= bytes;
        return p;
      }
    }
    return fresh(bytes);
  }
  // Bytes held idle (the calling thread's small blocks and everyone's large ones).
  size_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_mapped_ + cached_heap_ + small().bytes;
  }
  // Returns the idle blocks to the system (the calling thread's small ones, all large ones).
  size_t release_idle() {
    std::multimap<size_t, void*> blocks;
    size_t freed = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      freed = cached_mapped_ + cached_heap_;
      cached_mapped_ = cached_heap_ = 0;
    }
    for (auto& [bytes, p] : blocks) release(p, bytes);
    freed += small().bytes;
    small().clear();
    return freed;
  }
  void give(void* p, size_t bytes) {
    if (bytes < kMinCached) {
      SmallLists& sl = small();
      if (sl.bytes + bytes <= kMaxSmallPerThread) {
        sl.lists[bytes / 64].push_back(p);
        sl.bytes += bytes;
        return;
      }
    }
    // Mapped blocks and heap blocks have separate budgets, so that the many small blocks of a
    // derivative loop do not push a Lanczos basis out between two calls.
    if (bytes >= kMinCached && bytes < kMapped) {
      // Heap blocks: kept while there is room. When there is none the newly freed block goes
      // back: the ones already idle stay, so a loop whose working set exceeds the budget still
      // finds part of it here (dropping the oldest instead would miss every time in a cycle).
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_heap_ + bytes <= kMaxHeap) {
        free_.emplace(bytes, p);
        cached_heap_ += bytes;
        return;
      }
    } else if (bytes >= kMapped && bytes <= kMaxMapped) {
      // Mapped blocks: few and costly to map again (~0.3 ms per MB). The one just freed is the
      // likeliest to be asked for again (an analysis repeated with other sizes in between), so
      // older idle ones go back to make room, the largest first.
      std::vector<std::pair<size_t, void*>> evicted;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        while (cached_mapped_ + bytes > kMaxMapped) {
          auto largest = std::prev(free_.end());
          evicted.push_back(*largest);
          cached_mapped_ -= largest->first;
          free_.erase(largest);
        }
        free_.emplace(bytes, p);
        cached_mapped_ += bytes;
      }
      for (auto& [size, q] : evicted) release(q, size);
      return;
    }
    release(p, bytes);
  }

 private:
  // Blocks from kMapped up are mapped with every page in place (MAP_POPULATE): the kernel then
  // fills them in one go, ~0.3 ms per MB here, where faulting them in page by page on first touch
  // costs ~1.7 ms per MB on a VM (a Lanczos basis of 260 MB: 75 vs 450 ms). Every engine result
  // is written in full, so no page is mapped in vain.
  static void* fresh(size_t bytes) {
#if defined(__linux__) && defined(MAP_POPULATE)
    if (bytes >= kMapped) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      return p;
    }
#endif
    // 64-byte alignment for the BLAS and SIMD loops; small blocks take plain malloc (16-byte
    // aligned): glibc < 2.38 serves aligned_alloc without its thread cache, which made allocation
    // the main cost of small-tensor workloads (e.g. batch-1 training steps).
    void* p = bytes <= kSmall ? std::malloc(bytes) : std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void release(void* p, size_t bytes) {
#if defined(__linux__) && defined(MAP_POPULATE)
    if (bytes >= kMapped) {
      munmap(p, bytes);
      return;
    }
#endif
    std::free(p);
  }
  // Small blocks recycle per thread, no lock (blocks of all sizes are multiples of 64 bytes).
  struct SmallLists {
    std::vector<void*> lists[(size_t(64) << 10) / 64];
    size_t bytes = 0;
    void clear() {
      for (auto& l : lists) {
        for (void* p : l) std::free(p);
        l.clear();
      }
      bytes = 0;
    }
    ~SmallLists() { clear(); }
  };
  static SmallLists& small() {
    thread_local SmallLists lists;
    return lists;
  }
  static constexpr size_t kMaxSmallPerThread = size_t(16) << 20;  // 16 MiB idle per thread
  static constexpr size_t kSmall = 1088;                   // blocks of arrays up to 1 KiB
  static constexpr size_t kMinCached = size_t(64) << 10;   // 64 KiB
  // Idle blocks of 64 KiB to 16 MiB: 512 MiB (W2's float64 HVP keeps ~270 MB of them in use:
  // at 256 MiB every call faulted 8 MB back in).
  static constexpr size_t kMaxHeap = size_t(512) << 20;
  static constexpr size_t kMaxMapped = size_t(512) << 20;  // idle mapped blocks (from 16 MiB): 512 MiB
  static constexpr size_t kMapped = size_t(16) << 20;      // 16 MiB: populated mappings
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // idle blocks by size
  size_t cached_heap_ = 0, cached_mapped_ = 0;  // bytes idle in free_, below / from kMapped
};
}  // namespace

Storage::~Storage() {
  if (own_block) BlockCache::get().give(data, own_block);
}

size_t cached_host_bytes() { return BlockCache::get().idle_bytes(); }
size_t release_cached_host_memory() { return BlockCache::get().release_idle(); }

Array Array::empty(const Shape& shape, DType dtype, Device device) {
  check_rank(shape);
  Array a;
  size_t nbytes = static_cast<size_t>(numel_of(shape)) * dtype_size(dtype);
  if (DeviceBackend* be = backend_for(device)) {
    void* p = be->allocate(nbytes, device.index);
    a = from_blob(p, shape, contiguous_strides(shape), dtype, device, std::shared_ptr<void>(p, [be](void* q) {
                    be->release(q);
                  }));
    a.storage_->nbytes = nbytes;
    return a;
  }
  size_t block = ((nbytes + 63) / 64) * 64 + 64;
  void* p = BlockCache::get().take(block);  // may be a larger idle block: `block` is its size
  a.storage_ = std::make_shared<Storage>();
  a.storage_->data = p;
  a.storage_->nbytes = nbytes;
  a.storage_->own_block = block;
  a.shape_ = shape;
  a.strides_ = contiguous_strides(shape);
  a.dtype_ = dtype;
  return a;
}

Array Array::zeros(const Shape& shape, DType dtype, Device device) {
  Array a = empty(shape, dtype, device);
  if (device.type != DeviceType::CPU) {
    kernels::fill(a, 0.0);
    return a;
  }
  std::memset(a.raw(), 0, a.numel() * dtype_size(dtype));
  return a;
}

Array Array::full(const Shape& shape, DType dtype, double value, Device device) {
  Array a = empty(shape, dtype, device);
  kernels::fill(a, value);
  return a;
}

Array Array::from_blob(void* data, const Shape& shape, const Shape& strides, DType dtype, Device device,
                       std::shared_ptr<void> owner) {
  check_rank(shape);
  Array a;
  a.storage_ = std::make_shared<Storage>();
  a.storage_->data = data;
  a.storage_->device = device;
  a.storage_->owner = std::move(owner);
  a.shape_ = shape;
  a.strides_ = strides;
  a.dtype_ = dtype;
  return a;
}

int64_t Array::size(int axis) const { return shape_[normalize_axis(axis, ndim(), "size")]; }

bool Array::is_contiguous() const {
  int64_t acc = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

void* Array::raw() const {
  return static_cast<char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Array Array::reshape_view(const Shape& shape) const {
  check_rank(shape);
  if (numel_of(shape) != numel())
    throw_value("reshape: cannot reshape a tensor of shape ", shape_str(shape_), " (", numel(),
                " elements) into shape ", shape_str(shape));
  Array base = is_contiguous() ? *this : contiguous();
  base.shape_ = shape;
  base.strides_ = contiguous_strides(shape);
  return base;
}

Array Array::permute_view(const std::vector<int>& perm) const {
  if (static_cast<int>(perm.size()) != ndim())
    throw_value("transpose: axes ", perm.size(), " do not match a ", ndim(), "-d tensor");
  Array r = *this;
  std::vector<bool> seen(ndim(), false);
  for (int i = 0; i < ndim(); ++i) {
    int p = normalize_axis(perm[i], ndim(), "transpose");
    if (seen[p]) throw_value("transpose: repeated axis in permutation");
    seen[p] = true;
    r.shape_[i] = shape_[p];
    r.strides_[i] = strides_[p];
  }
  return r;
}

Array Array::broadcast_view(const Shape& shape) const {
  Shape bs = broadcast_shapes(shape_, shape, "broadcast_to");
  if (bs != shape)
    throw_value("broadcast_to: cannot broadcast shape ", shape_str(shape_), " to ", shape_str(shape));
  Array r = *this;
  size_t off = shape.size() - shape_.size();
  r.shape_ = shape;
  r.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) r.strides_[off + i] = shape_[i] == 1 ? 0 : strides_[i];
  return r;
}

Array Array::contiguous() const {
  if (is_contiguous()) return *this;
  Array out = empty(shape_, dtype_, device());
  kernels::copy(*this, out);
  return out;
}

Array Array::clone() const {
  Array out = empty(shape_, dtype_, device());
  kernels::copy(*this, out);
  return out;
}

Array Array::astype(DType dtype) const {
  if (dtype == dtype_) return *this;
  Array out = empty(shape_, dtype, device());
  kernels::copy(*this, out);
  return out;
}

Array Array::to(Device dev) const {
  if (dev == device()) return *this;
  Array src = contiguous();
  Array out = empty(shape_, dtype_, dev);
  DeviceBackend* be = backend_for(dev.type != DeviceType::CPU ? dev : device());
  be->copy_bytes(out.raw(), dev, src.raw(), src.device(), static_cast<size_t>(numel()) * dtype_size(dtype_));
  return out;
}

double Array::item() const {
  if (numel() != 1) throw_value("item: tensor of shape ", shape_str(shape_), " has ", numel(), " elements, not 1");
  if (device().type != DeviceType::CPU) return to(Device{}).item();
  switch (dtype_) {
    case DType::Float32: return *data<float>();
    case DType::Float64: return *data<double>();
    case DType::Int64: return static_cast<double>(*data<int64_t>());
  }
  return 0;
}

}  // namespace jaclab
