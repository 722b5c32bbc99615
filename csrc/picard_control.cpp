// Schema and argument checks of picard_control_: the per-sample stopping rules of the Picard
// solver, applied on the device after each update step.
//
// For every sample s still active (frozen[s] false), with a = res[s], r = a / ||x_{k+1}||,
// crit = r if rel else a:
//   trace[step, s] = crit (NaN for frozen samples), iters[s] += 1;
//   a not finite, or a > divergence_factor * (min a so far)  -> diverged, frozen;
//   else crit < tol                                           -> converged, frozen;
//   else crit < the best crit so far                          -> improved;
// a sample that stops or improves records (a, r) as its result residuals.
// Writes improved [S], new_div [S] (newly diverged) and summary int64 [4] (active after the
// step, improved, newly diverged, diverged in total) into buffers the solver owns. The
// solver reads the summary only on check steps: on an accelerator nothing here syncs.
//
// As for every op (see picard_update.cpp): the public op's only kernel checks the arguments
// and calls the internal op _picard_control_ (CPU kernel in cpu/, Triton on CUDA, fake).
// PicardLoop, whose buffers are its own, calls the internal op directly; picard_control_check
// runs the checks alone (for the pure-torch reference).
#include "picard_control.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <iterator>
#include <vector>

#include "common.h"

namespace fastpicard {
namespace {

void check_picard_control_args(const at::Tensor& res, const at::Tensor& norm,
                               const at::Tensor& frozen, const at::Tensor& converged,
                               const at::Tensor& diverged, const at::Tensor& iters,
                               const at::Tensor& stats, const at::Tensor& trace,
                               const at::Tensor& improved, const at::Tensor& new_div,
                               const at::Tensor& summary, int64_t step, double tol,
                               double divergence_factor) {
  const char* op = "picard_control";
  TORCH_CHECK_TYPE(res.scalar_type() == at::kFloat || res.scalar_type() == at::kDouble, op,
                   ": res must be float32 or float64, got ", res.scalar_type());
  TORCH_CHECK_VALUE(res.dim() == 1, op, ": res must be 1-D [S], got ", res.sizes());
  const int64_t S = res.size(0);
  const at::ScalarType fdt = res.scalar_type();
  TORCH_CHECK_VALUE(trace.dim() == 2 && trace.size(1) == S, op, ": trace must be "
                    "[capacity, S=", S, "], got ", trace.sizes());
  struct Arg {
    const char* name;
    const at::Tensor& t;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  const Arg norm_arg{"norm", norm, fdt, {S}};
  const Arg state[] = {  // the buffers the op writes
      {"frozen", frozen, at::kBool, {S}},       {"converged", converged, at::kBool, {S}},
      {"diverged", diverged, at::kBool, {S}},   {"iters", iters, at::kLong, {S}},
      {"stats", stats, fdt, {kStatRows, S}},    {"trace", trace, fdt, trace.sizes().vec()},
      {"improved", improved, at::kBool, {S}},   {"new_div", new_div, at::kBool, {S}},
      {"summary", summary, at::kLong, {kSummaryLen}}};
  auto check = [&](const Arg& a, bool written) {
    TORCH_CHECK_TYPE(a.t.scalar_type() == a.dtype, op, ": ", a.name, " must be ", a.dtype,
                     ", got ", a.t.scalar_type());
    TORCH_CHECK_VALUE(a.t.sizes() == at::IntArrayRef(a.shape), op, ": ", a.name,
                      " must have shape ", at::IntArrayRef(a.shape), ", got ", a.t.sizes());
    check_device(op, a.name, a.t, "res", res);
    TORCH_CHECK_VALUE(!written || a.t.is_contiguous(), op, ": ", a.name, " must be contiguous");
  };
  check(norm_arg, false);
  for (const Arg& a : state) check(a, true);
  TORCH_CHECK_INDEX(step >= 0 && step < trace.size(0), op, ": step ", step,
                    " outside the trace capacity ", trace.size(0));
  TORCH_CHECK_VALUE(tol > 0.0, op, ": tol must be > 0, got ", tol);
  TORCH_CHECK_VALUE(divergence_factor > 1.0, op, ": divergence_factor must be > 1, got ",
                    divergence_factor);
  // the written buffers are memory of their own, apart from each other and the residuals
  for (size_t i = 0; i < std::size(state); ++i) {
    check_no_overlap(op, state[i].t, "res", res, false);
    check_no_overlap(op, state[i].t, "norm", norm, false);
    for (size_t j = 0; j < i; ++j) {
      const bool apart = !has_data(state[i].t) || !has_data(state[j].t) ||
                         at::get_overlap_status(state[i].t, state[j].t) ==
                             at::MemOverlapStatus::No;
      TORCH_CHECK_VALUE(apart, op, ": ", state[i].name, " and ", state[j].name,
                        " share memory; each state tensor must be its own");
    }
  }
}

using ControlFn = void(const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, int64_t, double, bool, double);

void picard_control_(const at::Tensor& res, const at::Tensor& norm, at::Tensor& frozen,
                     at::Tensor& converged, at::Tensor& diverged, at::Tensor& iters,
                     at::Tensor& stats, at::Tensor& trace, at::Tensor& improved,
                     at::Tensor& new_div, at::Tensor& summary, int64_t step, double tol, bool rel,
                     double divergence_factor) {
  check_picard_control_args(res, norm, frozen, converged, diverged, iters, stats, trace,
                            improved, new_div, summary, step, tol, divergence_factor);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_picard_control_", "")
                       .typed<ControlFn>();
  op.call(res, norm, frozen, converged, diverged, iters, stats, trace, improved, new_div,
          summary, step, tol, rel, divergence_factor);
}

void picard_control_check(const at::Tensor& res, const at::Tensor& norm, const at::Tensor& frozen,
                          const at::Tensor& converged, const at::Tensor& diverged,
                          const at::Tensor& iters, const at::Tensor& stats,
                          const at::Tensor& trace, const at::Tensor& improved,
                          const at::Tensor& new_div, const at::Tensor& summary, int64_t step,
                          double tol, bool rel, double divergence_factor) {
  check_picard_control_args(res, norm, frozen, converged, diverged, iters, stats, trace,
                            improved, new_div, summary, step, tol, divergence_factor);
}

}  // namespace

#define ARGS                                                                                 \
  "(Tensor res, Tensor norm, Tensor(a!) frozen, Tensor(b!) converged, Tensor(c!) diverged, " \
  "Tensor(d!) iters, Tensor(e!) stats, Tensor(f!) trace, Tensor(g!) improved, "              \
  "Tensor(h!) new_div, Tensor(i!) summary, int step, float tol, bool rel, "                  \
  "float divergence_factor) -> ()"

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  m.def("picard_control_" ARGS);
  m.def("_picard_control_" ARGS);
  m.def("picard_control_check(Tensor res, Tensor norm, Tensor frozen, Tensor converged, "
        "Tensor diverged, Tensor iters, Tensor stats, Tensor trace, Tensor improved, "
        "Tensor new_div, Tensor summary, int step, float tol, bool rel, "
        "float divergence_factor) -> ()");
}
#undef ARGS

TORCH_LIBRARY_IMPL(fastpicard, CompositeImplicitAutograd, m) {
  m.impl("picard_control_", &picard_control_);
  m.impl("picard_control_check", &picard_control_check);
}

}  // namespace fastpicard
