// A small fork-join pool for the CPU's elementwise loops (GEMMs have OpenBLAS's own threads).
//
// for_range(n, grain, fn) calls fn(begin, end) on disjoint chunks covering [0, n), on the calling
// thread and the pool's workers. Chunks are claimed one at a time from a shared counter, so a
// worker that is slow to wake (its core busy) costs nothing: the caller takes the remaining
// chunks itself. Workers sleep on a condition variable between jobs and never spin, so they do
// not compete with OpenBLAS's threads for the cores. Runs serially when n < 2 * grain, with one
// thread, from inside a worker, or while another thread's job holds the pool. Chunks are whole
// multiples of 64 items, so vectorised loops split this way give the same bits as one pass.
#pragma once
#include <cstdint>
#include <functional>

namespace jaclab::parallel {

void for_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads used by for_range, the caller included (default: the BLAS's thread count).
int num_threads();
void set_num_threads(int n);

// Grains (elements per chunk, at least): the point where splitting pays for the wake-up.
constexpr int64_t kGrainCheap = 262144;     // one multiply-add per element
constexpr int64_t kGrainTranscend = 32768;  // tanh, exp, erf, ... (float64: a 256x256 tanh is split)

// The grains above count 8-byte elements. For the cheap, memory-bound loops a float32 element
// takes about half the time (half the bytes), so its chunks hold twice as many.
template <class T>
constexpr int64_t grain_for(int64_t grain) {
  return grain * static_cast<int64_t>(sizeof(double) / sizeof(T));
}

// Transcendental maps (tanh, exp, erf, ... through libmvec) differ more: a float32 element costs
// ~4.5x less than a float64 one (tanh here: 0.42 vs 1.9 ns; 16 lanes and a shorter polynomial),
// while waking a worker costs the same 60-90 us. A float32 tanh, one thread vs split in two:
// 131K elements 55-71 vs 56-118 us, 262K 109-123 vs 117-134 us, 393K 165-188 vs 120-141 us.
// So float32 chunks hold 6x as many: split from 393K elements.
template <class T>
constexpr int64_t transcend_grain() {
  return kGrainTranscend * (sizeof(T) == sizeof(float) ? 6 : 1);
}

}  // namespace jaclab::parallel
