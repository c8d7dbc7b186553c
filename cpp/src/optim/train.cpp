// The training loop: seeded minibatches, forward order and backward-SGD, progress, checkpoints.
#include <chrono>
#include <cstring>

#include "common.h"
#include "jaclab/kernels.h"
#include "jaclab/transforms.h"

namespace jaclab::optim {

// ---- batches ----------------------------------------------------------------------------------
BatchSampler::BatchSampler(int64_t n, int64_t b, uint64_t seed) : n_(n), b_(b), pos_(n), perm_(n), rng_(seed) {
  if (n <= 0) throw_value("batches: the data set is empty");
  if (b <= 0) throw_value("batch_size must be positive, got ", b);
  if (b > n) throw_value("batch_size ", b, " is larger than the data set (", n, " rows)");
}

void BatchSampler::shuffle() {
  for (int64_t i = 0; i < n_; ++i) perm_[i] = i;
  for (int64_t i = n_ - 1; i > 0; --i) {
    // j uniform in [0, i]: reject the top partial block of the 64-bit range.
    const uint64_t range = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r;
    do r = rng_(); while (r >= limit);
    std::swap(perm_[i], perm_[static_cast<int64_t>(r % range)]);
  }
  pos_ = 0;
}

void BatchSampler::next(int64_t* out) {
  if (pos_ + b_ > n_) shuffle();  // a new epoch; the leftover n mod b indices are dropped
  std::memcpy(out, perm_.data() + pos_, sizeof(int64_t) * b_);
  pos_ += b_;
}

Array sample_batches(int64_t n, int64_t batch_size, int64_t steps, uint64_t seed) {
  if (steps < 0) throw_value("steps must be >= 0, got ", steps);
  BatchSampler s(n, batch_size, seed);
  Array out = Array::empty({steps, batch_size}, DType::Int64);
  for (int64_t i = 0; i < steps; ++i) s.next(out.data<int64_t>() + i * batch_size);
  return out;
}

// ---- the minibatch objective ------------------------------------------------------------------
namespace {

Array gather_rows(const Array& X, const int64_t* idx, int64_t b) {
  Shape shape = X.shape();
  shape[0] = b;
  Array out = Array::empty(shape, X.dtype());
  const size_t row = dtype_size(X.dtype()) * static_cast<size_t>(X.numel() / std::max<int64_t>(X.shape()[0], 1));
  const char* src = static_cast<const char*>(X.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t i = 0; i < b; ++i) std::memcpy(dst + i * row, src + idx[i] * row, row);
  return out;
}

// Parameter views into a flat array (no copy); they keep its storage alive.
std::vector<Tensor> param_views(const Array& flat, const std::vector<Shape>& shapes) {
  std::vector<Tensor> out;
  out.reserve(shapes.size());
  char* base = static_cast<char*>(flat.raw());
  const size_t item = dtype_size(flat.dtype());
  int64_t off = 0;
  for (auto& s : shapes) {
    out.emplace_back(Array::from_blob(base + off * item, s, contiguous_strides(s), flat.dtype(), flat.device(),
                                      flat.storage()));
    off += numel_of(s);
  }
  return out;
}

int64_t total_numel(const std::vector<Shape>& shapes) {
  int64_t n = 0;
  for (auto& s : shapes) n += numel_of(s);
  return n;
}

struct Batch {
  Tensor x, y;
};

std::vector<Array> param_arrays(const Array& flat, const std::vector<Shape>& shapes) {
  std::vector<Array> out;
  out.reserve(shapes.size());
  for (auto& t : param_views(flat, shapes)) out.push_back(t.value());
  return out;
}

Objective make_objective(const model::Module& m, model::Loss kind, const std::vector<Shape>& shapes, const Batch& b,
                         int64_t* evals, bool fast = false) {
  if (fast)  // plain first-order gradient without the autograd graph (see Module::fast_forward)
    return [&m, kind, &shapes, b, evals](const Array& theta, Array& grad) -> double {
      std::vector<Array> ps = param_arrays(theta, shapes);
      thread_local std::vector<Array> tape, grads;  // reused: no large allocation per call
      tape.clear();
      std::vector<Array> gviews = param_arrays(grad, shapes);
      grads = gviews;  // blocks that can write their gradients in place do so
      Array gpred;
      const double loss = model::loss_and_grad(kind, m.fast_forward(ps.data(), b.x.value(), tape), b.y.value(), gpred);
      m.fast_backward(ps.data(), tape, gpred, grads.data(), /*need_dx=*/false);
      for (size_t i = 0; i < ps.size(); ++i)
        if (grads[i].raw() != gviews[i].raw()) kernels::copy(grads[i], gviews[i]);
      if (evals) ++*evals;
      return loss;
    };
  return [&m, kind, &shapes, b, evals](const Array& theta, Array& grad) -> double {
    std::vector<Tensor> ps = param_views(theta, shapes);
    Fn fn = [&](const TensorList& p) { return TensorList{model::loss(kind, m.forward(p.data(), b.x), b.y)}; };
    ValueAndGrad r = value_and_grad(fn, ps);
    std::vector<Tensor> gviews = param_views(grad, shapes);
    for (size_t i = 0; i < ps.size(); ++i) {
      Array dst = gviews[i].value();
      kernels::copy(r.grads[i].value(), dst);
    }
    if (evals) ++*evals;
    return r.value.item();
  };
}

double loss_only(const model::Module& m, model::Loss kind, const std::vector<Shape>& shapes, const Array& theta,
                 const Batch& b, bool fast) {
  if (fast) {  // the same numbers as the fast objective's loss
    std::vector<Array> ps = param_arrays(theta, shapes), tape;
    Array unused;
    return model::loss_and_grad(kind, m.fast_forward(ps.data(), b.x.value(), tape), b.y.value(), unused);
  }
  std::vector<Tensor> ps = param_views(theta, shapes);
  return model::loss(kind, m.forward(ps.data(), b.x), b.y).item();
}

void check_data(const model::Module& m, const std::vector<Shape>& shapes, const Array& X, const Array& Y,
                const Array& theta) {
  m.check_params(shapes);
  require_cpu(theta, "train: the parameter vector");
  require_cpu(X, "train: X");
  require_cpu(Y, "train: Y");
  if (theta.ndim() != 1 || theta.numel() != total_numel(shapes))
    throw_value("train: the flat parameter vector has ", theta.numel(), " elements but the model's parameters have ",
                total_numel(shapes));
  if (!is_float(theta.dtype())) throw_type("train: parameters must be float32 or float64");
  if (X.ndim() < 1 || Y.ndim() < 1) throw_value("train: data X and Y must have a leading sample axis");
  if (X.shape()[0] != Y.shape()[0])
    throw_value("train: X has ", X.shape()[0], " rows (shape ", shape_str(X.shape()), ") but Y has ", Y.shape()[0],
                " (shape ", shape_str(Y.shape()), ")");
  if (X.dtype() != theta.dtype())
    throw_type("train: X is ", dtype_name(X.dtype()), " but the parameters are ", dtype_name(theta.dtype()));
  if (!X.is_contiguous() || !Y.is_contiguous()) throw_value("train: X and Y must be contiguous");
}

}  // namespace

Objective batch_objective(const model::Module& m, model::Loss kind, const std::vector<Shape>& shapes, const Array& X,
                          const Array& Y, const std::vector<int64_t>& idx) {
  for (int64_t i : idx)
    if (i < 0 || i >= X.shape()[0]) throw_value("batch index ", i, " is out of range for ", X.shape()[0], " rows");
  auto shapes_copy = std::make_shared<std::vector<Shape>>(shapes);
  Batch b{Tensor(gather_rows(X, idx.data(), static_cast<int64_t>(idx.size()))),
          Tensor(gather_rows(Y, idx.data(), static_cast<int64_t>(idx.size())))};
  Objective inner = make_objective(m, kind, *shapes_copy, b, nullptr);
  return [inner, shapes_copy](const Array& theta, Array& grad) { return inner(theta, grad); };
}

LoopState start_state(const Optimizer& opt, const Array& theta0) {
  LoopState s;
  s.theta = theta0.contiguous().clone();
  s.state = opt.init(s.theta);
  s.anchor = s.theta.clone();
  s.anchor_state = s.state.clone();
  s.step = 0;
  return s;
}

// ---- the loop ---------------------------------------------------------------------------------
TrainResult train(const model::Module& m, model::Loss kind, const std::vector<Shape>& shapes, const Array& X,
                  const Array& Y, const Optimizer& opt, LoopState st, const TrainOptions& o,
                  std::vector<double> past_losses, const ProgressFn& progress, const PollFn& poll,
                  const CheckpointFn& checkpoint) {
  if (o.steps <= 0) throw_value("steps must be positive, got ", o.steps);
  if (o.record_every <= 0) throw_value("record_every must be positive, got ", o.record_every);
  if (o.window < 0) throw_value("window must be >= 0 (0 = full backward-SGD), got ", o.window);
  if (o.checkpoint_every < 0) throw_value("checkpoint_every must be >= 0, got ", o.checkpoint_every);
  check_data(m, shapes, X, Y, st.theta);
  if (st.step < 0 || st.step > o.steps) throw_value("train: resume step ", st.step, " is outside [0, steps=", o.steps, "]");
  if (static_cast<int64_t>(past_losses.size()) != st.step)
    throw_value("train: resuming at step ", st.step, " needs that many past losses, got ", past_losses.size());

  const int64_t B = o.batch_size;
  Array batches = sample_batches(X.shape()[0], B, o.steps, o.seed);  // validates batch_size
  auto batch = [&](int64_t n) {  // batch n (1-based)
    const int64_t* idx = batches.data<int64_t>() + (n - 1) * B;
    return Batch{Tensor(gather_rows(X, idx, B)), Tensor(gather_rows(Y, idx, B))};
  };

  TrainResult r;
  r.losses = std::move(past_losses);
  if (o.trajectory) r.trajectory.push_back(st.theta.clone());
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto last_poll = t0;
  const int64_t window = o.order == Order::Backward ? o.window : 1;
  const bool fast = !o.autograd_only && m.has_fast_grad();

  for (int64_t n = st.step + 1; n <= o.steps; ++n) {
    if (o.order == Order::Forward) {
      Batch b = batch(n);
      r.losses.push_back(opt.step(st.theta, st.state, make_objective(m, kind, shapes, b, &r.grad_evals, fast)));
    } else {
      // theta_n = T_{a+1} o ... o T_n (anchor): batch n's map first, batch a+1's last.
      r.losses.push_back(loss_only(m, kind, shapes, st.theta, batch(n), fast));
      const int64_t a = window == 0 ? 0 : ((n - 1) / window) * window;
      Array y = st.anchor.clone();
      State s = st.anchor_state.clone();
      for (int64_t k = n; k > a; --k) {
        Batch b = batch(k);
        opt.step(y, s, make_objective(m, kind, shapes, b, &r.grad_evals, fast));
      }
      st.theta = std::move(y);
      st.state = std::move(s);
      if (window > 0 && n % window == 0) {
        st.anchor = st.theta.clone();
        st.anchor_state = st.state.clone();
      }
    }
    st.step = n;
    bool go_on = true;
    if (n % o.record_every == 0 || n == o.steps) {
      if (o.trajectory && n % o.record_every == 0) r.trajectory.push_back(st.theta.clone());
      if (progress)
        go_on = progress({n, r.losses.back(), std::chrono::duration<double>(clock::now() - t0).count()});
    }
    if (checkpoint && o.checkpoint_every > 0 && n % o.checkpoint_every == 0) checkpoint(st, r.losses);
    if (go_on && poll) {
      auto now = clock::now();
      if (now - last_poll > std::chrono::milliseconds(50)) {
        last_poll = now;
        go_on = poll();
      }
    }
    if (!go_on) {
      r.stopped = n < o.steps;
      break;
    }
  }
  r.batches = Array::empty({st.step, B}, DType::Int64);
  std::memcpy(r.batches.raw(), batches.raw(), sizeof(int64_t) * st.step * B);
  r.final = std::move(st);
  return r;
}

}  // namespace jaclab::optim
