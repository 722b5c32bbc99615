// picard_gcn_loop: the whole Picard iteration of a GCN-style layer in C++,
//
//   x_{k+1} = alpha * x_k + (1 - alpha) * dropout(act(Â (x_k W + inject) + b))
//
// (inject: an optional constant [N, F] term, the input injection (x + f) W = x W + f W of a
// contractive layer), per iteration one at::mm / at::addmm (BLAS / cuBLAS) and one fused spmm_update (aggregation, bias,
// activation, smoothing, per-sample residual and norm; the public op, which checks the graph
// and options), then PicardLoop::advance (stopping rules, best iterate, divergence rollback;
// host read every check_every steps). No Python per iteration, but the loop looks for Ctrl-C
// itself. Under autograd every step is recorded (backward="unroll").
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/Exceptions.h>
#include <torch/library.h>

#include <chrono>
#include <tuple>

#include "common.h"
#include "picard_loop.h"

namespace fastpicard {
namespace {

using OptTensor = c10::optional<at::Tensor>;
using Out4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using GcnResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, int64_t>;

bool needs_grad(const OptTensor& t) { return t.has_value() && t->requires_grad(); }

// Python's SIGINT handler only sets a flag that the interpreter reads between bytecodes; a
// long C++ loop must look at it itself. At most every 50 ms (a clock read per step
// otherwise), with the GIL (this op runs with it released). KeyboardInterrupt, or whatever
// the handler raised, reaches the caller as itself.
class InterruptCheck {
 public:
  void operator()() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_ || !Py_IsInitialized()) return;
    next_ = now + std::chrono::milliseconds(50);
    pybind11::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw python_error();
  }

 private:
  std::chrono::steady_clock::time_point next_ = std::chrono::steady_clock::now();
};

GcnResult picard_gcn_loop(const at::Tensor& rowptr, const at::Tensor& col,
                          const OptTensor& weight, const at::Tensor& t_rowptr,
                          const at::Tensor& t_col, const at::Tensor& t_perm,
                          const OptTensor& t_weight, const at::Tensor& x0, const at::Tensor& lin_weight,
                          const OptTensor& inject, const OptTensor& bias, c10::string_view act, double negative_slope,
                          double dropout, double alpha, const OptTensor& batch,
                          int64_t num_samples, double tol, bool rel, int64_t max_iter,
                          double divergence_factor, int64_t check_every,
                          bool stop_on_divergence) {
  static auto spmm_update =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastpicard::spmm_update", "")
          .typed<Out4(const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                      const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                      const at::Tensor&, double, const OptTensor&, c10::string_view, double, double,
                      const OptTensor&, const OptTensor&, int64_t, const OptTensor&, bool,
                      bool)>();
  TORCH_CHECK_VALUE(x0.dim() == 2 && x0.size(0) == rowptr.size(0) - 1,
                    "picard_gcn: x0 must be [num_nodes=", rowptr.size(0) - 1, ", F], got ",
                    x0.sizes());
  check_device("picard_gcn", "weight", lin_weight, "x0", x0);
  TORCH_CHECK_TYPE(lin_weight.scalar_type() == x0.scalar_type(), "picard_gcn: weight has "
                   "dtype ", lin_weight.scalar_type(), " but x0 has dtype ", x0.scalar_type());
  TORCH_CHECK_VALUE(lin_weight.dim() == 2 && lin_weight.size(0) == x0.size(1) &&
                        lin_weight.size(1) == x0.size(1),
                    "picard_gcn: weight must be [F, F] with F=", x0.size(1), ", got ",
                    lin_weight.sizes());
  if (inject.has_value()) {
    check_device("picard_gcn", "inject", *inject, "x0", x0);
    TORCH_CHECK_TYPE(inject->scalar_type() == x0.scalar_type(), "picard_gcn: inject has dtype ",
                     inject->scalar_type(), " but x0 has dtype ", x0.scalar_type());
    TORCH_CHECK_VALUE(inject->sizes() == x0.sizes(), "picard_gcn: inject must have x0's shape ",
                      x0.sizes(), ", got ", inject->sizes());
  }
  PicardLoop loop(x0, alpha, batch, num_samples, /*leading=*/false, tol, rel, max_iter,
                  divergence_factor, check_every, /*reuse_buffers=*/false);
  const bool params_need_grad =
      lin_weight.requires_grad() || needs_grad(bias) || needs_grad(weight) || needs_grad(inject);
  at::Tensor x = x0;
  InterruptCheck check_interrupt;
  while (true) {
    check_interrupt();
    const at::Tensor h = inject.has_value() ? at::addmm(*inject, x, lin_weight)
                                            : at::mm(x, lin_weight);
    OptTensor seed;
    if (dropout > 0) {  // the key of this step's mask, from the default generator
      seed = at::randint(0, int64_t(1) << 31, {2}, x.options().dtype(at::kLong));
    }
    const bool recorded = at::GradMode::is_enabled() && (x.requires_grad() || params_need_grad);
    auto [x_new, res, norm, unused] =
        spmm_update.call(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                         bias, act, negative_slope, dropout, seed, batch, num_samples,
                         loop.frozen_mask(recorded), /*return_norm=*/true, /*save_act=*/false);
    auto [next, active, n_div] = loop.advance(x, x_new, res, norm, recorded);
    x = next;
    if (active < 0) continue;  // not a check step
    if (active == 0 || loop.steps() == max_iter || (stop_on_divergence && n_div > 0)) break;
  }
  auto [answer, iters, abs_res, rel_res, converged, diverged, trace] = loop.finish(x);
  return {answer, iters, abs_res, rel_res, converged, diverged, trace, loop.steps()};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  m.def(
      "picard_gcn_loop(Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, "
      "Tensor t_col, Tensor t_perm, Tensor? t_weight, Tensor x0, Tensor lin_weight, "
      "Tensor? inject, Tensor? bias, str act, "
      "float negative_slope, float dropout, float alpha, Tensor? batch, int num_samples, "
      "float tol, bool rel, int max_iter, float divergence_factor, int check_every, "
      "bool stop_on_divergence) -> (Tensor x, Tensor iterations, Tensor abs_residual, "
      "Tensor rel_residual, Tensor converged, Tensor diverged, Tensor trace, int steps)",
      &picard_gcn_loop);  // composite: autograd records the ops of every step
}

}  // namespace fastpicard
