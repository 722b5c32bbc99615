// Schema, argument checks and the device-generic kernel of picard_control_: the per-sample
// stopping rules of the Picard solver, applied on the device after each update step.
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
#include "picard_control.h"

#include <torch/library.h>

#include <limits>

namespace fastpicard {

void check_picard_control_args(const at::Tensor& res, const at::Tensor& norm,
                               const at::Tensor& frozen, const at::Tensor& converged,
                               const at::Tensor& diverged, const at::Tensor& iters,
                               const at::Tensor& stats, const at::Tensor& trace,
                               const at::Tensor& improved, const at::Tensor& new_div,
                               const at::Tensor& summary, int64_t step) {
  const int64_t S = res.numel();
  TORCH_CHECK_TYPE(res.scalar_type() == at::kFloat || res.scalar_type() == at::kDouble,
                   "picard_control: res must be float32 or float64, got ", res.scalar_type());
  TORCH_CHECK_VALUE(res.dim() == 1, "picard_control: res must be 1-D [S], got ", res.sizes());
  auto same = [&](const at::Tensor& t, const char* name, at::ScalarType dt,
                  at::IntArrayRef shape) {
    TORCH_CHECK_TYPE(t.scalar_type() == dt, "picard_control: ", name, " must be ", dt, ", got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.sizes() == shape, "picard_control: ", name, " must have shape ", shape,
                      ", got ", t.sizes());
    TORCH_CHECK_VALUE(t.device() == res.device(), "picard_control: ", name, " is on ",
                      t.device(), " but res is on ", res.device());
    TORCH_CHECK_VALUE(t.is_contiguous(), "picard_control: ", name, " must be contiguous");
  };
  same(norm, "norm", res.scalar_type(), {S});
  same(frozen, "frozen", at::kBool, {S});
  same(converged, "converged", at::kBool, {S});
  same(diverged, "diverged", at::kBool, {S});
  same(iters, "iters", at::kLong, {S});
  same(stats, "stats", res.scalar_type(), {kStatRows, S});
  TORCH_CHECK_VALUE(trace.dim() == 2 && trace.size(1) == S, "picard_control: trace must be "
                    "[capacity, S=", S, "], got ", trace.sizes());
  same(trace, "trace", res.scalar_type(), trace.sizes());
  same(improved, "improved", at::kBool, {S});
  same(new_div, "new_div", at::kBool, {S});
  same(summary, "summary", at::kLong, {kSummaryLen});
  TORCH_CHECK_INDEX(step >= 0 && step < trace.size(0), "picard_control: step ", step,
                    " outside the trace capacity ", trace.size(0));
}

void picard_control_generic(const at::Tensor& res, const at::Tensor& norm, at::Tensor& frozen,
                            at::Tensor& converged, at::Tensor& diverged, at::Tensor& iters,
                            at::Tensor& stats, at::Tensor& trace, at::Tensor& improved_out,
                            at::Tensor& new_div_out, at::Tensor& summary, int64_t step,
                            double tol, bool rel, double divergence_factor) {
  check_picard_control_args(res, norm, frozen, converged, diverged, iters, stats, trace,
                            improved_out, new_div_out, summary, step);
  const double tiny = res.scalar_type() == at::kDouble ? std::numeric_limits<double>::min()
                                                       : std::numeric_limits<float>::min();
  const at::Tensor active = frozen.logical_not();
  const at::Tensor r_rel = res / norm.clamp_min(tiny);
  const at::Tensor& crit = rel ? r_rel : res;
  trace.select(0, step).copy_(at::where(active, crit, std::numeric_limits<double>::quiet_NaN()));

  at::Tensor min_abs = stats.select(0, kMinAbs), res_abs = stats.select(0, kAbs);
  at::Tensor res_rel = stats.select(0, kRel);
  const at::Tensor bad = res.isfinite().logical_not() | res.gt(min_abs * divergence_factor);
  const at::Tensor new_div = active & bad;
  const at::Tensor ok = active & bad.logical_not();
  const at::Tensor new_conv = ok & crit.lt(tol);
  const at::Tensor improved = ok & new_conv.logical_not() & crit.lt(rel ? res_rel : res_abs);
  const at::Tensor record = new_div | new_conv | improved;

  iters.add_(active.to(at::kLong));
  min_abs.copy_(at::where(ok, at::minimum(min_abs, res), min_abs));
  res_abs.copy_(at::where(record, res, res_abs));
  res_rel.copy_(at::where(record, r_rel, res_rel));
  converged.logical_or_(new_conv);
  diverged.logical_or_(new_div);
  frozen.logical_or_(new_conv | new_div);
  summary.copy_(at::stack({frozen.logical_not().sum(), improved.sum(), new_div.sum(),
                           diverged.sum()}));
  improved_out.copy_(improved);
  new_div_out.copy_(new_div);
}

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  m.def(
      "picard_control_(Tensor res, Tensor norm, Tensor(a!) frozen, Tensor(b!) converged, "
      "Tensor(c!) diverged, Tensor(d!) iters, Tensor(e!) stats, Tensor(f!) trace, "
      "Tensor(g!) improved, Tensor(h!) new_div, Tensor(i!) summary, int step, float tol, "
      "bool rel, float divergence_factor) -> ()");
  // The same rules, always through the device-generic kernel (tests cross-check the CPU one).
  m.def(
      "picard_control_generic_(Tensor res, Tensor norm, Tensor(a!) frozen, "
      "Tensor(b!) converged, Tensor(c!) diverged, Tensor(d!) iters, Tensor(e!) stats, "
      "Tensor(f!) trace, Tensor(g!) improved, Tensor(h!) new_div, Tensor(i!) summary, "
      "int step, float tol, bool rel, float divergence_factor) -> ()");
}

// Every device without its own kernel runs the at:: version (CPU registers a scalar loop).
TORCH_LIBRARY_IMPL(fastpicard, CompositeExplicitAutograd, m) {
  m.impl("picard_control_", &picard_control_generic);
  m.impl("picard_control_generic_", &picard_control_generic);
}

}  // namespace fastpicard
