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

// Grains (elements per chunk, at least): the point where splitting pays for the hand-off to a
// spinning worker (a few us). Measured on 2 cores, one thread vs two, medians in one process:
//   float64 tanh  32K 80 -> 41 us, 131K 260 -> 156, 524K 1012 -> 529
//   float32 tanh  65K 27 -> 15 us, 131K 55 -> 28
//   float64 mul  131K 38 -> 35 us (memory-bound: little to gain), 524K 155 -> 77
//   float32 mul  262K 38 -> 21 us
// (With workers that slept between jobs, a wake-up cost 60-90 us and the grains were 4-6x larger.)
constexpr int64_t kGrainCheap = 65536;      // one multiply-add per element
constexpr int64_t kGrainTranscend = 16384;  // tanh, exp, erf, ... (float64: split from 32K elements)

// The grains above count 8-byte elements. For the cheap, memory-bound loops a float32 element
// takes about half the time (half the bytes), so its chunks hold twice as many.
template <class T>
constexpr int64_t grain_for(int64_t grain) {
  return grain * static_cast<int64_t>(sizeof(double) / sizeof(T));
}

// Transcendental maps (tanh, exp, erf, ... through libmvec): a float32 element costs ~4.5x less
// than a float64 one (tanh here: 0.42 vs 1.9 ns; 16 lanes and a shorter polynomial), so float32
// chunks hold twice as many: split from 64K elements.
template <class T>
constexpr int64_t transcend_grain() {
  return kGrainTranscend * (sizeof(T) == sizeof(float) ? 2 : 1);
}

}  // namespace jaclab::parallel
