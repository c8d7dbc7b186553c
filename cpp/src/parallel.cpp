#include "jaclab/parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "jaclab/blas.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define JL_CPU_RELAX() _mm_pause()
#else
#define JL_CPU_RELAX() ((void)0)
#endif

namespace jaclab::parallel {
namespace {

using Clock = std::chrono::steady_clock;
// How long an idle worker (and a caller waiting for its workers) spins before sleeping: long
// enough to bridge the gaps between the ops of one transform (Python and graph bookkeeping, a few
// microseconds each), short enough to give the core back soon after the work stops.
constexpr auto kSpin = std::chrono::microseconds(100);

// Spins until done() or kSpin has passed; true if done().
template <class F>
bool spin_until(F&& done) {
  const auto deadline = Clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      JL_CPU_RELAX();
    }
    if (Clock::now() >= deadline) return done();
  }
}

struct Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, chunk, n_chunks;
  std::atomic<int64_t> next{0};  // next chunk to claim
  std::mutex error_mu;
  std::exception_ptr error;  // the first exception of any chunk, rethrown to the caller
};

// Claims and runs chunks until none is left. An exception ends the job (no chunk is claimed after
// it) instead of escaping a worker thread, which would terminate the process.
void run_chunks(Job& job) {
  for (int64_t c; (c = job.next.fetch_add(1, std::memory_order_relaxed)) < job.n_chunks;) {
    const int64_t begin = c * job.chunk;
    try {
      (*job.fn)(begin, std::min(job.n, begin + job.chunk));
    } catch (...) {
      std::lock_guard<std::mutex> lk(job.error_mu);
      if (!job.error) job.error = std::current_exception();
      job.next.store(job.n_chunks);
    }
  }
}

thread_local bool t_in_worker = false;

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()) + 1; }

  // False if another caller's job holds the pool (the caller then runs serially).
  bool run(Job& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();  // no system call when every worker is spinning
    run_chunks(job);
    {
      // No worker may pick the job up from now on; those that did are finishing their chunks.
      std::lock_guard<std::mutex> lk(mu_);
      job_ = nullptr;
    }
    if (!spin_until([&] { return active_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return active_.load(std::memory_order_acquire) == 0; });
    }
    return true;
  }

 private:
  void work() {
    t_in_worker = true;
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_.load() || generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_.load()) return;
      seen = generation_.load(std::memory_order_relaxed);
      Job* job = job_;
      if (!job) continue;  // the caller finished that job alone; wait for the next
      active_.fetch_add(1, std::memory_order_relaxed);
      lk.unlock();
      run_chunks(*job);
      lk.lock();
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_;  // one job at a time
  std::mutex mu_;    // guards job_, generation_, active_, stop_
  std::condition_variable cv_, done_cv_;
  Job* job_ = nullptr;                 // guarded by mu_
  std::atomic<uint64_t> generation_{0};  // written under mu_; read by spinning workers
  std::atomic<int> active_{0};          // workers inside a job (incremented under mu_)
  std::atomic<bool> stop_{false};
};

std::atomic<int> g_threads{0};  // 0: not chosen yet (the BLAS's count)
std::mutex g_pool_mu;
std::unique_ptr<Pool> g_pool;
pid_t g_pool_pid = 0;

Pool* pool() {
  const int want = num_threads();
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (g_pool && g_pool_pid != getpid()) g_pool.release();  // forked child: the threads are gone (leak the husk)
  if (!g_pool || g_pool->size() != want) {
    g_pool.reset();
    if (want > 1) g_pool = std::make_unique<Pool>(want - 1);
    g_pool_pid = getpid();
  }
  return g_pool.get();
}

}  // namespace

int num_threads() {
  // First call: take OpenBLAS's thread count as ours and set OpenBLAS to one thread (the GEMMs
  // are split by this pool; see parallel.h).
  static const int blas_default = [] {
    const int n = std::max(1, blas::num_threads());
    blas::set_num_threads(1);
    return n;
  }();
  const int n = g_threads.load();
  return n > 0 ? n : blas_default;
}

void set_num_threads(int n) {
  num_threads();  // OpenBLAS to one thread first, whatever the order of calls
  g_threads.store(std::max(1, n));
}

void for_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int64_t align) {
  if (n <= 0) return;
  const int threads = t_in_worker ? 1 : num_threads();
  if (threads < 2 || n < 2 * grain) return fn(0, n);
  Pool* p = pool();
  if (!p) return fn(0, n);
  // A few chunks per thread, so a late or preempted worker leaves little for the others.
  const int64_t n_chunks = std::min<int64_t>(n / grain, 4 * static_cast<int64_t>(p->size()));
  Job job;
  job.fn = &fn;
  job.n = n;
  // Chunks start at multiples of `align` (64) items: a vectorised loop then meets the same lane
  // alignment in every chunk as in one serial pass, so results are bit-identical at any thread
  // count (SIMD and scalar-remainder variants of tanh/exp round differently).
  align = std::max<int64_t>(1, align);
  job.chunk = ((n + n_chunks - 1) / n_chunks + align - 1) / align * align;
  job.n_chunks = (n + job.chunk - 1) / job.chunk;
  if (job.n_chunks < 2 || !p->run(job)) return fn(0, n);
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace jaclab::parallel
