// Standalone check of the fused attention kernels against a naive CPU reference in double precision.
//   attention_check           correctness over several shapes, both dtypes; exit code 1 on any failure
//   attention_check --bench   times forward / jvp / backward at BH=128, T=S=4096, dh=dv=64 in float
// Build: nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 cuda/attention.cu cuda/tests/attention_check.cu
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../attention.h"

using jaclab::cuda::attention_backward;
using jaclab::cuda::attention_forward;
using jaclab::cuda::attention_jvp;
using Vec = std::vector<double>;

#define CK(x)                                                                                              \
  do {                                                                                                     \
    cudaError_t e_ = (x);                                                                                  \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_));      \
  } while (0)

struct Case {
  int64_t BH, T, S;
  int D;
  bool causal;
};

// Naive reference, one query row at a time (the same bottom-right causal rule as the kernels).
struct Ref {
  Vec o, lse, od, gq, gk, gv;
};
Ref reference(const Case& c, const Vec& q, const Vec& k, const Vec& v, const Vec& qd, const Vec& kd, const Vec& vd,
              const Vec& g) {
  const int64_t T = c.T, S = c.S, D = c.D;
  const double scale = 1 / std::sqrt(double(D));
  Ref r{Vec(c.BH * T * D), Vec(c.BH * T), Vec(c.BH * T * D), Vec(c.BH * T * D), Vec(c.BH * S * D),
        Vec(c.BH * S * D)};
  Vec s(S), p(S), ds(S);
  for (int64_t b = 0; b < c.BH; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const double *qt = &q[(b * T + t) * D], *qdt = &qd[(b * T + t) * D], *gt = &g[(b * T + t) * D];
      const int64_t n = c.causal ? std::max<int64_t>(0, std::min(S, t + S - T + 1)) : S;  // visible keys 0..n-1
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double a = 0, da = 0;
        for (int64_t d = 0; d < D; ++d) {
          a += qt[d] * k[(b * S + j) * D + d];
          da += qdt[d] * k[(b * S + j) * D + d] + qt[d] * kd[(b * S + j) * D + d];
        }
        s[j] = a * scale, ds[j] = da * scale, m = std::max(m, s[j]);
      }
      double l = 0, pds = 0;
      for (int64_t j = 0; j < n; ++j) l += p[j] = std::exp(s[j] - m);
      for (int64_t j = 0; j < n; ++j) p[j] /= l, pds += p[j] * ds[j];
      r.lse[b * T + t] = n ? m + std::log(l) : -INFINITY;
      double* ot = &r.o[(b * T + t) * D];
      double* odt = &r.od[(b * T + t) * D];
      for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < D; ++d) {
          ot[d] += p[j] * v[(b * S + j) * D + d];
          odt[d] += p[j] * (ds[j] - pds) * v[(b * S + j) * D + d] + p[j] * vd[(b * S + j) * D + d];
        }
      double delta = 0;
      for (int64_t d = 0; d < D; ++d) delta += gt[d] * ot[d];
      for (int64_t j = 0; j < n; ++j) {
        double gp = 0;
        for (int64_t d = 0; d < D; ++d) gp += gt[d] * v[(b * S + j) * D + d];
        const double gs = p[j] * (gp - delta) * scale;
        for (int64_t d = 0; d < D; ++d) {
          r.gq[(b * T + t) * D + d] += gs * k[(b * S + j) * D + d];
          r.gk[(b * S + j) * D + d] += gs * qt[d];
          r.gv[(b * S + j) * D + d] += p[j] * gt[d];
        }
      }
    }
  return r;
}

// max |x - ref| / max(max |ref|, 0.01) over finite reference entries (the floor keeps outputs that are exactly
// zero in theory, e.g. o_dot with a single visible key and no v_dot, from dividing rounding noise by ~0);
// an infinite reference entry must match exactly.
double rel_err(const Vec& x, const Vec& ref) {
  double num = 0, den = 1e-2;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(ref[i])) {
      if (x[i] != ref[i]) return INFINITY;
      continue;
    }
    if (!std::isfinite(x[i])) return INFINITY;
    num = std::max(num, std::abs(x[i] - ref[i]));
    den = std::max(den, std::abs(ref[i]));
  }
  return num / den;
}

template <class T> struct Dev {  // a device copy of a host vector, rounded to T
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const Vec& h) : n(h.size()) {
    std::vector<T> t(h.begin(), h.end());
    CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    if (n) CK(cudaMemcpy(p, t.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(size_t n_) : Dev(Vec(n_, std::nan(""))) {}  // poisoned: every output must be written
  ~Dev() { cudaFree(p); }
  Vec get() const {
    std::vector<T> t(n);
    if (n) CK(cudaMemcpy(t.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return Vec(t.begin(), t.end());
  }
};

Vec rounded(const Vec& x, bool to_float) {
  Vec y(x);
  if (to_float)
    for (auto& e : y) e = float(e);
  return y;
}

// Runs the three kernels for one case and dtype; returns whether every error is under tol. `variant` picks
// which tangents / gradients are left null, so the null paths are exercised too.
template <class T> bool run_case(const Case& c, int variant, std::mt19937_64& rng) {
  const bool f = sizeof(T) == 4;
  const double tol = f ? 2e-4 : 1e-11;
  const size_t nq = c.BH * c.T * c.D, nk = c.BH * c.S * c.D;
  std::normal_distribution<double> N(0, 1);
  auto rnd = [&](size_t n, double s) {
    Vec x(n);
    for (auto& e : x) e = s * N(rng);
    return rounded(x, f);
  };
  Vec q = rnd(nq, 1.5), k = rnd(nk, 1.5), v = rnd(nk, 1), qd = rnd(nq, 1), kd = rnd(nk, 1), vd = rnd(nk, 1),
      g = rnd(nq, 1);
  const bool no_qd = variant == 1, no_kd = variant == 2, no_vd = variant == 2 || variant == 3;
  const bool no_gk = variant == 1, no_gq = variant == 3;
  Vec zq(nq, 0.0), zk(nk, 0.0);
  Ref r = reference(c, q, k, v, no_qd ? zq : qd, no_kd ? zk : kd, no_vd ? zk : vd, g);

  Dev<T> Q(q), K(k), V(v), Qd(qd), Kd(kd), Vd(vd), G(g), O(nq), Lse(size_t(c.BH * c.T)), O2(nq), Od(nq), Gq(nq),
      Gk(nk), Gv(nk);
  attention_forward<T>(Q.p, K.p, V.p, O.p, Lse.p, c.BH, c.T, c.S, c.D, c.D, c.causal, 0);
  attention_jvp<T>(Q.p, K.p, V.p, no_qd ? nullptr : Qd.p, no_kd ? nullptr : Kd.p, no_vd ? nullptr : Vd.p, O2.p,
                   Od.p, c.BH, c.T, c.S, c.D, c.D, c.causal, 0);
  attention_backward<T>(Q.p, K.p, V.p, O.p, Lse.p, G.p, no_gq ? nullptr : Gq.p, no_gk ? nullptr : Gk.p, Gv.p, c.BH,
                        c.T, c.S, c.D, c.D, c.causal, 0);
  CK(cudaDeviceSynchronize());

  struct Item {
    const char* name;
    double err;
  };
  std::vector<Item> items = {{"o", rel_err(O.get(), r.o)},     {"lse", rel_err(Lse.get(), r.lse)},
                             {"jvp.o", rel_err(O2.get(), r.o)}, {"o_dot", rel_err(Od.get(), r.od)},
                             {"gv", rel_err(Gv.get(), r.gv)}};
  if (!no_gq) items.push_back({"gq", rel_err(Gq.get(), r.gq)});
  if (!no_gk) items.push_back({"gk", rel_err(Gk.get(), r.gk)});
  bool ok = true;
  std::printf("%-6s BH=%lld T=%lld S=%lld D=%d %-9s v%d:", f ? "float" : "double", (long long)c.BH,
              (long long)c.T, (long long)c.S, c.D, c.causal ? "causal" : "full", variant);
  for (auto& it : items) {
    const bool good = it.err <= tol;
    ok &= good;
    std::printf(" %s %.1e%s", it.name, it.err, good ? "" : " FAIL");
  }
  std::printf("\n");
  return ok;
}

// The reference JVP against central differences of the reference forward (checks the formula itself).
bool fd_check(std::mt19937_64& rng) {
  const Case c{2, 9, 13, 16, true};
  const size_t nq = c.BH * c.T * c.D, nk = c.BH * c.S * c.D;
  std::normal_distribution<double> N(0, 1);
  auto rnd = [&](size_t n) {
    Vec x(n);
    for (auto& e : x) e = N(rng);
    return x;
  };
  Vec q = rnd(nq), k = rnd(nk), v = rnd(nk), qd = rnd(nq), kd = rnd(nk), vd = rnd(nk), g = rnd(nq);
  const double h = 1e-5;
  auto shifted = [&](const Vec& x, const Vec& dx, double s) {
    Vec y(x);
    for (size_t i = 0; i < y.size(); ++i) y[i] += s * dx[i];
    return y;
  };
  Ref p = reference(c, shifted(q, qd, h), shifted(k, kd, h), shifted(v, vd, h), qd, kd, vd, g);
  Ref m = reference(c, shifted(q, qd, -h), shifted(k, kd, -h), shifted(v, vd, -h), qd, kd, vd, g);
  Ref r = reference(c, q, k, v, qd, kd, vd, g);
  Vec fd(nq);
  for (size_t i = 0; i < nq; ++i) fd[i] = (p.o[i] - m.o[i]) / (2 * h);
  const double e = rel_err(fd, r.od);
  std::printf("reference o_dot vs central differences: %.1e%s\n", e, e < 1e-7 ? "" : " FAIL");
  return e < 1e-7;
}

__global__ void fill(float* x, size_t n, uint32_t seed) {  // uniform in [-1, 1), a cheap hash per index
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 16, h *= 0x85ebca6bu, h ^= h >> 13, h *= 0xc2b2ae35u, h ^= h >> 16;
    x[i] = float(h) * (2.0f / 4294967296.0f) - 1.0f;
  }
}

int bench() {
  const int64_t BH = 128, T = 4096, S = 4096;
  const int D = 64;
  const size_t n = BH * T * D;
  int dev = 0, sms = 0, clk_khz = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CK(cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const double peak = double(sms) * 128 * 2 * clk_khz * 1e3;  // FP32 FMA lanes per SM × 2 flops × clock
  std::printf("%s: %d SMs, %.0f MHz, FP32 peak %.1f TFLOP/s\n", prop.name, sms, clk_khz / 1e3, peak / 1e12);
  std::printf("BH=%lld T=%lld S=%lld dh=dv=%d float\n", (long long)BH, (long long)T, (long long)S, D);
  std::vector<float*> buf(13);
  for (size_t i = 0; i < buf.size(); ++i) {
    CK(cudaMalloc(&buf[i], n * sizeof(float)));
    fill<<<1024, 256>>>(buf[i], n, uint32_t(i * 7919 + 1));
  }
  float *q = buf[0], *k = buf[1], *v = buf[2], *qd = buf[3], *kd = buf[4], *vd = buf[5], *o = buf[6],
        *od = buf[7], *lse = buf[8], *g = buf[9], *gq = buf[10], *gk = buf[11], *gv = buf[12];
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (bool causal : {false, true}) {
    auto time = [&](const char* name, double flops, auto&& fn) {
      fn();  // warm-up
      CK(cudaDeviceSynchronize());
      CK(cudaEventRecord(a));
      for (int i = 0; i < 10; ++i) fn();
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      ms /= 10;
      if (causal) flops /= 2;
      const double tf = flops / (ms * 1e-3);
      std::printf("  %-6s %-8s %8.2f ms  %6.2f TFLOP/s  %5.1f%% of FP32 peak\n", causal ? "causal" : "full", name,
                  ms, tf / 1e12, 100 * tf / peak);
    };
    const double base = double(BH) * T * S * D;
    time("forward", 4 * base, [&] { attention_forward<float>(q, k, v, o, lse, BH, T, S, D, D, causal, 0); });
    time("jvp", 12 * base, [&] { attention_jvp<float>(q, k, v, qd, kd, vd, o, od, BH, T, S, D, D, causal, 0); });
    attention_forward<float>(q, k, v, o, lse, BH, T, S, D, D, causal, 0);
    time("backward", 10 * base,
         [&] { attention_backward<float>(q, k, v, o, lse, g, gq, gk, gv, BH, T, S, D, D, causal, 0); });
  }
  for (float* p : buf) cudaFree(p);
  return 0;
}

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench();
    std::mt19937_64 rng(1234);
    bool ok = fd_check(rng);
    ok &= !jaclab::cuda::attention_supported(8, 8) && !jaclab::cuda::attention_supported(64, 32) &&
          jaclab::cuda::attention_supported(128, 128);
    const std::vector<Case> cases = {
        {3, 37, 53, 16, false}, {3, 37, 53, 16, true},  {2, 128, 128, 64, false}, {2, 128, 128, 64, true},
        {1, 70, 200, 32, false}, {1, 70, 200, 32, true}, {2, 100, 60, 128, true},  {2, 100, 60, 128, false},
        {2, 300, 300, 64, true}, {1, 1, 5, 64, true},    {2, 20, 0, 32, false},    {1, 3, 1, 16, true},
    };
    int i = 0;
    for (const Case& c : cases) {
      ok &= run_case<double>(c, i % 4, rng);
      ok &= run_case<float>(c, (i + 1) % 4, rng);
      ++i;
    }
    std::printf(ok ? "ALL OK\n" : "FAILURES\n");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
