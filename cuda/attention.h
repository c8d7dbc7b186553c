// Fused scaled-dot-product attention on CUDA: forward, forward-mode (JVP) and reverse-mode (VJP) kernels.
// Plain C++ API over device pointers; the engine's op wrappers live elsewhere.
//
// Shapes (contiguous, row-major; BH = batch*heads slices, T queries, S keys):
//   q (BH, T, dh)   k (BH, S, dh)   v (BH, S, dv)   o (BH, T, dv)   lse (BH, T)
// Math: s = q kᵀ·scale with scale = 1/sqrt(dh), p = softmax over keys, o = p v, lse = log Σ exp(s).
// causal: key s is visible to query t iff s <= t + (S - T) (bottom-right aligned, as for a KV cache).
// A query row with no visible key gives o = 0, lse = -inf and zero gradients/tangents.
// Every function throws std::runtime_error naming the kernel and the CUDA error on any failure.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace jaclab::cuda {

// True iff the fused kernels are instantiated for these head sizes: dh == dv and dh in {16, 32, 64, 128}.
bool attention_supported(int dh, int dv);

// o = softmax(q kᵀ·scale) v; lse (nullable) = logsumexp of each score row, in natural log, as the backward needs.
template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* o, T* lse, int64_t BH, int64_t T_, int64_t S, int dh,
                       int dv, bool causal, cudaStream_t stream);

// Forward-mode: o and its tangent o_dot in one pass. Tangents q_dot, k_dot, v_dot are nullable (= zero).
//   dS = (q_dot kᵀ + q k_dotᵀ)·scale,  o_dot = P (dS - rowsum(P∘dS)) v + P v_dot
template <class T>
void attention_jvp(const T* q, const T* k, const T* v, const T* q_dot, const T* k_dot, const T* v_dot, T* o, T* o_dot,
                   int64_t BH, int64_t T_, int64_t S, int dh, int dv, bool causal, cudaStream_t stream);

// Reverse-mode: given o and lse from attention_forward and g = dL/do, writes gq = dL/dq, gk = dL/dk, gv = dL/dv
// (each nullable = not wanted; results are written, not accumulated).
//   D = rowsum(g∘o), P = exp(s - lse), gv = Pᵀ g, gS = P∘(g vᵀ - D), gq = gS k·scale, gk = gSᵀ q·scale
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* g, T* gq, T* gk, T* gv,
                        int64_t BH, int64_t T_, int64_t S, int dh, int dv, bool causal, cudaStream_t stream);

}  // namespace jaclab::cuda
