// Model specs, optimizers and the training loop (jaclab/model.h, jaclab/optim.h). Thin: argument
// conversion, the GIL, and Python callbacks; the maths is in cpp/src/optim and cpp/src/nn.
#include <pybind11/functional.h>

#include "common.h"
#include "jaclab/kernels.h"
#include "jaclab/model.h"
#include "jaclab/optim.h"

namespace jaclab::py_bind {
namespace {

struct Spec {
  model::ModulePtr p;
};
struct Opt {
  optim::OptimizerPtr p;
};

// A private copy of an array-like (the optimizer writes into its arrays).
Array owned(py::handle a, py::object dtype = py::none()) { return to_tensor(a, dtype).value().contiguous().clone(); }
py::object out(const Array& a) { return py::cast(Tensor(a)); }

optim::State make_state(int64_t t, const std::map<std::string, double>& scalars, const py::dict& buffers,
                        const py::list& stages) {
  optim::State s;
  s.t = t;
  s.scalars = scalars;
  for (auto [k, v] : buffers) s.buffers.emplace(k.cast<std::string>(), owned(v));
  for (auto v : stages) s.stages.push_back(owned(v));
  return s;
}

py::dict loop_state_dict(const optim::LoopState& st) {
  py::dict d;
  d["theta"] = out(st.theta.clone());
  d["state"] = st.state.clone();
  d["anchor"] = out(st.anchor.clone());
  d["anchor_state"] = st.anchor_state.clone();
  d["step"] = st.step;
  return d;
}

}  // namespace

void bind_optim(py::module_& m) {
  using A = const ArrayLike&;
  py::class_<Spec>(m, "ModelSpec", "A C++ model spec (jaclab/model.h): hyper-parameters, no parameters.")
      .def("describe", [](const Spec& s) { return s.p->describe(); })
      .def("__repr__", [](const Spec& s) { return "ModelSpec(" + s.p->describe() + ")"; })
      .def("param_shapes", [](const Spec& s) {
        py::list l;
        for (auto& sh : s.p->param_shapes()) l.append(py::tuple(py::cast(sh)));
        return l;
      })
      .def("apply", [](const Spec& s, const std::vector<ArrayLike>& flat, A x) {
             std::vector<Tensor> ps;
             for (auto& a : flat) ps.push_back(a.t);
             return s.p->apply(ps, x.t);
           },
           py::arg("flat_params"), py::arg("x"), "Apply with the parameters as a flat list in jl.tree_flatten order.");
  auto act = [](const std::string& a) { return nn::activation_from_name(a); };
  m.def("spec_linear", [](int64_t i, int64_t o) { return Spec{model::linear(i, o)}; });
  m.def("spec_mlp", [act](int64_t i, int64_t h, int64_t o, const std::string& a) { return Spec{model::mlp(i, h, o, act(a))}; });
  m.def("spec_layer_norm", [](int64_t d, double eps) { return Spec{model::layer_norm(d, eps)}; });
  m.def("spec_rms_norm", [](int64_t d, double eps) { return Spec{model::rms_norm(d, eps)}; });
  m.def("spec_attention", [](int64_t d, int h, bool c) { return Spec{model::attention(d, h, c)}; });
  m.def("spec_transformer_block", [act](int64_t d, int h, int64_t dh, bool c, const std::string& norm, double s,
                                        const std::string& a) {
    return Spec{model::transformer_block(d, h, dh, c, nn::norm_from_name(norm), s, act(a))};
  });
  m.def("spec_residual", [](const Spec& b, double s) { return Spec{model::residual(b.p, s)}; });
  m.def("spec_sequential", [](const std::vector<Spec>& layers) {
    std::vector<model::ModulePtr> ps;
    for (auto& l : layers) ps.push_back(l.p);
    return Spec{model::sequential(ps)};
  });
  m.def("spec_activation", [act](const std::string& a) { return Spec{model::activation(act(a))}; });
  m.def("spec_last_token", [] { return Spec{model::last_token()}; });
  m.def("model_loss", [](const std::string& kind, A pred, A target) {
    return model::loss(model::loss_from_name(kind), pred.t, target.t);
  });

  py::class_<optim::State>(m, "OptimizerState", "Optimizer state (flat buffers, like the flat parameter vector).")
      .def(py::init(&make_state), py::arg("t") = 0, py::arg("scalars") = std::map<std::string, double>{},
           py::arg("buffers") = py::dict(), py::arg("stages") = py::list())
      .def_readonly("t", &optim::State::t)
      .def_readonly("scalars", &optim::State::scalars)
      .def_property_readonly("buffers", [](const optim::State& s) {
        py::dict d;
        for (auto& [k, v] : s.buffers) d[py::str(k)] = out(v.clone());
        return d;
      })
      .def_property_readonly("stages", [](const optim::State& s) {
        py::list l;
        for (auto& k : s.stages) l.append(out(k.clone()));
        return l;
      })
      .def("copy", &optim::State::clone);

  py::class_<Opt>(m, "Optimizer", "A C++ update rule (cpp/src/optim).")
      .def("describe", [](const Opt& o) { return o.p->describe(); })
      .def("init", [](const Opt& o, A theta) { return o.p->init(theta.t.value()); }, py::arg("theta"))
      .def("step", [](const Opt& o, const optim::State& state, A theta, const py::function& objective) {
        // objective(theta: Tensor) -> (loss, grad): called once per gradient evaluation (RK: per stage).
        optim::State s = state.clone();
        optim::require_cpu(theta.t.value(), "step: theta");
        Array th = theta.t.value().contiguous().clone();
        optim::Objective f = [&](const Array& at, Array& g) {
          py::tuple r = objective(Tensor(at.clone()));
          Array src = to_tensor(r[1], dtype_to_py(g.dtype())).value();
          if (src.shape() != g.shape())
            throw ValueError(str_cat("step: the objective returned a gradient of shape ", shape_str(src.shape()),
                                     ", expected ", shape_str(g.shape())));
          kernels::copy(src, g);
          return r[0].cast<double>();
        };
        double loss = o.p->step(th, s, f);
        return py::make_tuple(out(th), s, loss);
      }, py::arg("state"), py::arg("theta"), py::arg("objective"));
  m.def("optim_sgd", [](double lr) { return Opt{optim::sgd(lr)}; });
  m.def("optim_momentum", [](double lr, double beta, bool nest) { return Opt{optim::momentum(lr, beta, nest)}; });
  m.def("optim_adam", [](double lr, double b1, double b2, double eps, double wd) {
    return Opt{optim::adam(lr, b1, b2, eps, wd)};
  });
  m.def("optim_rk", [](const std::string& method, double lr, const std::string& pre, double mom, double b2, double eps,
                       double tol, double safety, double min_f, double max_f, int max_rej) {
    optim::RKOptions o;
    o.method = method, o.lr = lr, o.preconditioner = pre, o.momentum = mom, o.b2 = b2, o.eps = eps, o.tol = tol;
    o.safety = safety, o.min_factor = min_f, o.max_factor = max_f, o.max_rejections = max_rej;
    return Opt{optim::rk(o)};
  });
  m.def("optim_polyak", [](double scale, double f_star, double max_lr, double eps) {
    return Opt{optim::polyak(scale, f_star, max_lr, eps)};
  });
  m.def("rk_methods", &optim::rk_methods);
  m.def("sample_batches", [](int64_t n, int64_t b, int64_t steps, uint64_t seed) {
    return Tensor(optim::sample_batches(n, b, steps, seed));
  });

  m.def("optim_train", [](const Spec& spec, const std::string& loss, const std::vector<Shape>& shapes, A X, A Y,
                          const Opt& opt, A theta0, py::object resume, const std::vector<double>& past_losses, int64_t steps,
                          int64_t batch_size, uint64_t seed, const std::string& order, int64_t window,
                          int64_t record_every, bool trajectory, int64_t checkpoint_every, py::object callback,
                          py::object checkpoint, bool autograd_only) {
    optim::TrainOptions o;
    o.steps = steps, o.batch_size = batch_size, o.seed = seed, o.window = window, o.record_every = record_every;
    o.trajectory = trajectory, o.checkpoint_every = checkpoint_every, o.autograd_only = autograd_only;
    if (order == "forward") o.order = optim::Order::Forward;
    else if (order == "backward") o.order = optim::Order::Backward;
    else throw ValueError("order must be 'forward' or 'backward', got '" + order + "'");
    optim::LoopState st;
    if (resume.is_none()) {
      st = optim::start_state(*opt.p, theta0.t.value());
    } else {
      py::dict start = resume.cast<py::dict>();
      st.theta = owned(start["theta"]);
      st.state = start["state"].cast<optim::State>().clone();
      st.anchor = owned(start["anchor"]);
      st.anchor_state = start["anchor_state"].cast<optim::State>().clone();
      st.step = start["step"].cast<int64_t>();
    }
    const model::Loss kind = model::loss_from_name(loss);
    Array Xa = X.t.value().contiguous(), Ya = Y.t.value().contiguous();

    // Callbacks run with the GIL; an exception they raise stops the loop and is re-raised after.
    std::unique_ptr<py::error_already_set> error;
    bool interrupted = false;
    optim::ProgressFn progress;
    if (!callback.is_none())
      progress = [&](const optim::Progress& p) {
        py::gil_scoped_acquire gil;
        try {
          py::object r = callback(p.step, p.loss, p.elapsed);
          return r.is_none() || r.cast<bool>();
        } catch (py::error_already_set& e) {
          error = std::make_unique<py::error_already_set>(std::move(e));
          return false;
        }
      };
    optim::PollFn poll = [&] {
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) {  // Ctrl-C: stop cleanly, return what was computed
        PyErr_Clear();
        interrupted = true;
        return false;
      }
      return true;
    };
    optim::CheckpointFn ckpt;
    if (!checkpoint.is_none())
      ckpt = [&](const optim::LoopState& s, const std::vector<double>& losses) {
        py::gil_scoped_acquire gil;
        if (error) return;
        try {
          checkpoint(loop_state_dict(s), losses);
        } catch (py::error_already_set& e) {
          error = std::make_unique<py::error_already_set>(std::move(e));
        }
      };
    optim::TrainResult r;
    {
      py::gil_scoped_release nogil;
      r = optim::train(*spec.p, kind, shapes, Xa, Ya, *opt.p, std::move(st), o, past_losses, progress, poll, ckpt);
    }
    if (error) throw std::move(*error);
    py::dict d;
    d["loop_state"] = loop_state_dict(r.final);
    d["losses"] = r.losses;
    d["batches"] = out(r.batches);
    py::list traj;
    for (auto& t : r.trajectory) traj.append(out(t));
    d["trajectory"] = traj;
    d["grad_evals"] = r.grad_evals;
    d["stopped"] = r.stopped;
    d["interrupted"] = interrupted;
    return d;
  });
}

}  // namespace jaclab::py_bind
