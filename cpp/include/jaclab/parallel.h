// A small fork-join pool for the CPU's loops: elementwise maps, and the GEMMs, which it splits
// into single-threaded BLAS calls (OpenBLAS itself runs on one thread: see below).
//
// for_range(n, grain, fn) calls fn(begin, end) on disjoint chunks covering [0, n), on the calling
// thread and the pool's workers. Chunks are claimed one at a time from a shared counter, so a
// worker that is slow to wake (its core busy) costs nothing: the caller takes the remaining
// chunks itself. Workers spin for ~0.1 ms after a job (the next op's job usually comes within
// microseconds, and waking a sleeping thread costs 20-90 us on a VM), then sleep on a condition
// variable. Runs serially when n < 2 * grain, with one thread, from inside a worker, or while
// another thread's job holds the pool. Chunks are whole multiples of `align` items (default 64),
// so vectorised loops split this way give the same bits as one pass.
//
// Why GEMMs are split here rather than by OpenBLAS's own threads: on the 2-vCPU VMs this project
// is measured on, OpenBLAS's threaded GEMM runs at ~77 GFLOP/s float64 (256x512x512) in some
// periods and ~101 in others, while the same product split in two halves, one single-threaded
// OpenBLAS call per thread, runs at 98-102 in both (XLA's GEMM, measured alongside, also keeps
// ~102). OpenBLAS's threads synchronise several times per GEMM (shared packed panels); two
// independent halves synchronise once. One pool for GEMMs and elementwise loops also means one
// set of warm threads instead of two competing for the same cores.
#pragma once
#include <cstdint>
#include <functional>

namespace jaclab::parallel {

void for_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int64_t align = 64);

// Threads used by for_range, the caller included. The default is the count OpenBLAS chose when it
// loaded (OPENBLAS_NUM_THREADS, else every core); the first call also sets OpenBLAS itself to one
// thread, since its GEMMs are split here.
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
