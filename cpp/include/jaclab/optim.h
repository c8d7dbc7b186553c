// Optimizers and training loops that run in C++ (no Python per step).
//
// Parameters are handled as ONE flat contiguous 1-D array theta (float32 or float64): parameter
// i of the model is the slice [offset_i, offset_i + numel_i), in jl.tree_flatten order (see
// jaclab/model.h). Every update rule then reads like the textbook, one loop over theta's
// elements. The rules live one per file under cpp/src/optim/, formulas in comments; the Python
// mirror jaclab/optim/reference.py writes the same formulas in NumPy.
//
// A step sees the minibatch loss only through an Objective: the loss at any point theta and its
// gradient. Runge-Kutta methods call it once per stage, always on the SAME minibatch, so each
// step is a step of one well-defined ODE theta' = -grad L_B(theta).
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "jaclab/array.h"
#include "jaclab/model.h"

namespace jaclab::optim {

// The update loops run on the CPU (they update parameters in place, element by element).
inline void require_cpu(const Array& a, const char* what) {
  if (a.device().type != DeviceType::CPU)
    throw_value(what, " is on ", a.device().str(), ", but the optimizer loops run on the CPU; move it with .to(\"cpu\")");
}

// Optimizer state: everything a step needs besides theta, so that steps can be replayed,
// inspected and checkpointed.
struct State {
  int64_t t = 0;                          // updates done
  std::map<std::string, double> scalars;  // "lr": step size used by the last update; "h": adaptive RK step
  std::map<std::string, Array> buffers;   // flat, like theta: "m" (momentum / first moment), "v" (second moment)
  std::vector<Array> stages;              // RK: the stage vectors k_1..k_s of the last step (inspection only)
  State clone() const;                    // deep copy
};

// Minibatch loss at theta; writes the gradient (same shape and dtype as theta) into `grad`.
using Objective = std::function<double(const Array& theta, Array& grad)>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string describe() const = 0;
  virtual State init(const Array& theta) const;  // fresh state (zero buffers) for parameters like theta
  // One update of theta, in place. Returns the minibatch loss at the starting point.
  virtual double step(Array& theta, State& state, const Objective& f) const = 0;
};
using OptimizerPtr = std::shared_ptr<const Optimizer>;

// theta <- theta - lr * g
OptimizerPtr sgd(double lr);
// buf <- beta buf + g;  heavy ball: theta <- theta - lr buf;  Nesterov: theta <- theta - lr (g + beta buf)
OptimizerPtr momentum(double lr, double beta, bool nesterov);
// Adam (weight_decay = 0) / AdamW (decoupled weight decay), with bias correction.
OptimizerPtr adam(double lr, double b1, double b2, double eps, double weight_decay);

// Explicit Runge-Kutta on the gradient flow theta' = X(theta) = -P^{-1} grad L_B(theta).
struct RKOptions {
  std::string method = "rk4";    // euler | heun | midpoint | rk4 | rk23 (Bogacki-Shampine 3(2)) | rk45 (Dormand-Prince 5(4))
  double lr = 0.1;               // step size h (initial h for the adaptive pairs)
  std::string preconditioner;    // "" | "adam": P = diag(sqrt(v_hat) + eps), v from the first-stage gradient, frozen over the stages
  double b2 = 0.999, eps = 1e-8; // for the preconditioner
  double momentum = 0.0;         // beta: m <- beta m + (1-beta) sum_i b_i k_i; theta <- theta + h m / (1 - beta^t)
  double tol = 1e-3;             // adaptive pairs: accept when h ||sum_i (b_i - b*_i) k_i||_2 <= tol
  double safety = 0.9, min_factor = 0.2, max_factor = 5.0;
  int max_rejections = 50;
};
OptimizerPtr rk(const RKOptions& options);
std::vector<std::string> rk_methods();

// Polyak / corridor step: h = min(scale (L - f_star) / (||g||^2 + eps), max_lr), clipped at 0;
// theta <- theta - h g. With f_star = 0 this is the corridor learning rate (papers.md item 7).
OptimizerPtr polyak(double scale, double f_star, double max_lr, double eps);

// ---- the training loop ------------------------------------------------------------------------

// Minibatches: consecutive slices of per-epoch permutations of 0..n-1; the last n mod batch_size
// indices of each permutation are dropped, so every batch has exactly batch_size rows. A
// permutation is a Fisher-Yates shuffle (i = n-1 .. 1, swap i with j uniform in [0, i]) driven by
// one std::mt19937_64(seed) for the whole run; j is drawn by rejection sampling on the 64-bit
// outputs (no std::uniform_int_distribution, whose algorithm is implementation-defined), so the
// sequence is the same on every platform.
class BatchSampler {
 public:
  BatchSampler(int64_t n, int64_t batch_size, uint64_t seed);
  void next(int64_t* out);  // writes the next batch_size indices
 private:
  int64_t n_, b_, pos_;
  std::vector<int64_t> perm_;
  std::mt19937_64 rng_;
  void shuffle();
};
// The first `steps` batches of BatchSampler(n, batch_size, seed), as a (steps, batch_size) int64 array.
Array sample_batches(int64_t n, int64_t batch_size, int64_t steps, uint64_t seed);

enum class Order { Forward, Backward };

// Everything needed to continue a run (what a checkpoint holds).
struct LoopState {
  Array theta;         // current iterate theta_step
  State state;         // optimizer state at theta
  Array anchor;        // backward order: the point the batch maps are composed onto (theta_0, or the window's anchor)
  State anchor_state;  // optimizer state at the anchor
  int64_t step = 0;    // iterates done
};
LoopState start_state(const Optimizer& opt, const Array& theta0);

struct Progress {
  int64_t step;    // iterates done
  double loss;     // losses[step - 1]
  double elapsed;  // seconds since the loop started
};

struct TrainOptions {
  int64_t steps = 0;          // total iterates (a resumed run continues up to this)
  int64_t batch_size = 0;
  uint64_t seed = 0;
  Order order = Order::Forward;
  int64_t window = 0;         // backward order: 0 = full backward-SGD; m >= 1 = windowed (m = 1 is forward)
  int64_t record_every = 1;   // callback and trajectory every record_every iterates
  bool trajectory = false;    // keep theta_0, theta_r, theta_2r, ...
  int64_t checkpoint_every = 0;  // 0 = never
  // Gradients: the models' first-order fast path when every block has one (Module::has_fast_grad),
  // else the autograd engine; autograd_only forces the engine (both agree to rounding).
  bool autograd_only = false;
};

struct TrainResult {
  LoopState final;
  std::vector<double> losses;  // losses[n-1] = L_{B_n}(theta_{n-1}): batch n's loss before iterate n
  Array batches;               // (steps done, batch_size) int64: the batch indices used, in order
  std::vector<Array> trajectory;
  int64_t grad_evals = 0;      // gradient evaluations in this call
  bool stopped = false;        // stopped early by the callback / interrupt
};

// Called every record_every iterates; return false to stop (the result then holds what was done).
using ProgressFn = std::function<bool(const Progress&)>;
// Called about every 50 ms (wall clock); return false to stop (e.g. Ctrl-C seen).
using PollFn = std::function<bool()>;
// Called every checkpoint_every iterates with the loop state and the losses so far.
using CheckpointFn = std::function<void(const LoopState&, const std::vector<double>& losses)>;

// Trains `module` on (X, Y): X (N, ...) float in theta's dtype; Y (N, ...) targets (int64 class
// ids for cross_entropy, or floats). Forward order: theta_n = T_n(theta_{n-1}), one optimizer
// step per iterate. Backward order (backward-SGD, papers.md item 1): theta_n = T_{a+1} o ... o
// T_n (anchor), i.e. the maps of batches n, n-1, ..., a+1 applied in that order to the anchor
// (a = 0, anchor = theta_0 for full backward-SGD: n(n+1)/2 optimizer steps for n iterates; with a
// window m the anchor moves to theta_{jm} every m iterates, at most m steps per iterate). Each
// composition starts from the anchor's optimizer state. `losses` of the previous run (resume) are
// passed in `past_losses`.
TrainResult train(const model::Module& module, model::Loss loss, const std::vector<Shape>& shapes, const Array& X,
                  const Array& Y, const Optimizer& opt, LoopState start, const TrainOptions& options,
                  std::vector<double> past_losses = {}, const ProgressFn& progress = nullptr,
                  const PollFn& poll = nullptr, const CheckpointFn& checkpoint = nullptr);

// The minibatch objective of `module` on rows `idx` of (X, Y), as used by the loop (exposed for
// tests and for jl.optim.step).
Objective batch_objective(const model::Module& module, model::Loss loss, const std::vector<Shape>& shapes,
                          const Array& X, const Array& Y, const std::vector<int64_t>& idx);

}  // namespace jaclab::optim
