// PicardLoop (picard_loop.h). Python makes one call per iteration (step, bound directly in
// picard_loop_python.cpp):
//
//   x_new = picard_update(x, fn(x), frozen=done)     fused update + per-sample residuals
//   picard_control_(...)                              stopping rules on the device
//   best-iterate / divergence-rollback selection      torch.where on rows, only when needed
//
// Flags are read on the host only on check steps (every `check_every` steps and the last);
// in between, samples are frozen on the device, so the answer equals exact early exit.
// Without autograd, iterates are written into reused buffers (x_{k+1} never aliases x_k or
// the best iterate), so the caller must not hold on to past iterates.
// Device-generic: every tensor op goes through the dispatcher (CPU kernels here, the Triton
// picard_update on CUDA); grad mode is honoured, so `backward="unroll"` differentiates it.
// The loop checks its arguments once and x and fn's output every step, then calls the
// internal ops (_picard_update, _picard_control_) directly: the rest is its own state.
#include "picard_loop.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <limits>

#include "common.h"
#include "picard_control.h"

namespace fastpicard {

namespace {

using UpdateFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, double, const c10::optional<at::Tensor>&, int64_t,
    const c10::optional<at::Tensor>&, bool);
using UpdateOutFn = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, double, const c10::optional<at::Tensor>&, int64_t,
    const c10::optional<at::Tensor>&, bool, at::Tensor&);
using ControlFn = void(const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, int64_t, double, bool, double);

}  // namespace

PicardLoop::PicardLoop(const at::Tensor& x0, double alpha, const c10::optional<at::Tensor>& batch,
                       int64_t num_samples, bool leading, double tol, bool rel, int64_t max_iter,
                       double divergence_factor, int64_t check_every, bool reuse_buffers)
    : alpha_(alpha), batch_(batch), S_(num_samples), leading_(leading), tol_(tol), rel_(rel),
      max_iter_(max_iter), factor_(divergence_factor), check_every_(check_every),
      reuse_(reuse_buffers), shape_(x0.sizes().vec()), dtype_(x0.scalar_type()),
      device_(x0.device()), keep_(x0) {
  const char* op = "PicardLoop";
  const auto dt = x0.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                   op, ": x0 must be float32/float16/bfloat16/float64, got ", dt);
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, op, ": alpha must lie in [0, 1), got ", alpha);
  TORCH_CHECK_VALUE(tol > 0.0, op, ": tol must be > 0, got ", tol);
  TORCH_CHECK_VALUE(max_iter >= 1, op, ": max_iter must be >= 1, got ", max_iter);
  TORCH_CHECK_VALUE(check_every >= 1, op, ": check_every must be >= 1, got ", check_every);
  TORCH_CHECK_VALUE(divergence_factor > 1.0, op, ": divergence_factor must be > 1");
  TORCH_CHECK_VALUE(!batch.has_value() || x0.dim() >= 1, op, ": a batch needs x0 with rows");
  check_samples(op, batch, num_samples, x0.dim() ? x0.size(0) : 1, "row", x0);
  TORCH_CHECK_VALUE(!leading || (batch.has_value() && x0.size(0) == num_samples),
                    op, ": leading needs one sample per row of x0");
  const auto sd = x0.options().dtype(stat_dtype(x0.scalar_type()));
  // Few allocations (each costs more than the tiny tensors' arithmetic): views into one bool
  // and one int64 buffer.
  flags_ = at::zeros({5, S_}, sd.dtype(at::kBool));
  frozen_ = flags_[0];
  converged_ = flags_[1];
  diverged_ = flags_[2];
  improved_ = flags_[3];
  new_div_ = flags_[4];
  counts_ = at::zeros({S_ + kSummaryLen}, sd.dtype(at::kLong));
  iters_ = counts_.narrow(0, 0, S_);
  summary_ = counts_.narrow(0, S_, kSummaryLen);
  stats_ = at::full({kStatRows, S_}, std::numeric_limits<double>::infinity(), sd);
  trace_ = at::full({std::min<int64_t>(max_iter, 64), S_},
                    std::numeric_limits<double>::quiet_NaN(), sd);
}

std::tuple<at::Tensor, int64_t, int64_t> PicardLoop::step(const at::Tensor& x,
                                                          const at::Tensor& z) {
  // x is the caller's iterate, z what fn returned: the update kernels (called directly below,
  // with buffers of this loop) rely on both matching x0 exactly
  check_iterate("PicardLoop.step", x);
  TORCH_CHECK_VALUE(z.sizes() == x.sizes() && z.scalar_type() == x.scalar_type() &&
                        z.device() == x.device(),
                    "picard: fn(x) must match x (shape ", x.sizes(), ", dtype ", x.scalar_type(),
                    ", device ", x.device(), "), got shape ", z.sizes(), ", dtype ",
                    z.scalar_type(), ", device ", z.device());
  static auto update = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fastpicard::_picard_update", "")
                           .typed<UpdateFn>();
  static auto update_out = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("fastpicard::_picard_update_out", "")
                               .typed<UpdateOutFn>();
  const bool recorded = at::GradMode::is_enabled() && (x.requires_grad() || z.requires_grad());
  at::Tensor x_new, res, norm;
  if (!recorded && reuse_) {
    x_new = free_buffer(x);
    std::tie(res, norm) = update_out.call(x, z, alpha_, batch_, S_, frozen_, true, x_new);
  } else {
    std::tie(x_new, res, norm) =
        update.call(x, z, alpha_, batch_, S_, frozen_mask(recorded), true);
  }
  return advance(x, x_new, res, norm, recorded);
}

std::tuple<at::Tensor, int64_t, int64_t> PicardLoop::advance(const at::Tensor& x,
                                                             at::Tensor x_new,
                                                             const at::Tensor& res,
                                                             const at::Tensor& norm,
                                                             bool recorded) {
  static auto control = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("fastpicard::_picard_control_", "")
                            .typed<ControlFn>();
  TORCH_CHECK(k_ < max_iter_, "PicardLoop: step ", k_, " beyond max_iter=", max_iter_);
  if (k_ == trace_.size(0)) {  // grow the trace geometrically
    const int64_t more = std::min(trace_.size(0), max_iter_ - k_);
    trace_ = at::cat({trace_, at::full({more, S_}, std::numeric_limits<double>::quiet_NaN(),
                                       trace_.options())});
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;  // bookkeeping: no autograd
    control.call(res, norm, frozen_, converged_, diverged_, iters_, stats_, trace_, improved_,
                 new_div_, summary_, k_, tol_, rel_, factor_);
  }
  ++k_;
  // Autograd saves where()'s mask: a recorded step gets masks the next step won't touch.
  const at::Tensor improved = recorded ? improved_.clone() : improved_;
  const at::Tensor new_div = recorded ? new_div_.clone() : new_div_;
  if (k_ % check_every_ != 0 && k_ != max_iter_) {  // no host read: select on the device
    keep_ = at::where(rows(improved), x_new, keep_);
    return {at::where(rows(new_div), x, x_new), -1, -1};
  }
  // The host read: a sync on accelerators, nothing on CPU.
  const at::Tensor s = summary_.is_cpu() ? summary_ : summary_.cpu();
  const int64_t* c = s.const_data_ptr<int64_t>();
  n_active_ = c[kNumActive];
  if (c[kNumNewDiverged] > 0) x_new = at::where(rows(new_div), x, x_new);
  if (c[kNumImproved] == n_active_) {
    keep_ = x_new;  // every running sample improved: no copy (rows of stopped ones unused)
  } else if (c[kNumImproved] > 0) {
    keep_ = at::where(rows(improved), x_new, keep_);
  }
  return {x_new, n_active_, c[kNumDiverged]};
}

void PicardLoop::check_iterate(const char* what, const at::Tensor& x) const {
  TORCH_CHECK_VALUE(x.sizes() == at::IntArrayRef(shape_) && x.scalar_type() == dtype_ &&
                        x.device() == device_,
                    what, ": x must match x0 (shape ", at::IntArrayRef(shape_), ", dtype ", dtype_,
                    ", device ", device_, "), got shape ", x.sizes(), ", dtype ",
                    x.scalar_type(), ", device ", x.device());
}

at::Tensor PicardLoop::rows(const at::Tensor& mask) const {
  std::vector<int64_t> shape(shape_.size(), 1);
  if (!batch_.has_value()) return mask.view(shape);
  shape[0] = -1;
  return (leading_ ? mask : mask.index_select(0, *batch_)).view(shape);
}

LoopResult PicardLoop::finish(const at::Tensor& x) const {
  check_iterate("PicardLoop.finish", x);
  const at::Tensor answer = n_active_ == 0 ? x : at::where(rows(active()), keep_, x);
  auto host = [](const at::Tensor& t) { return t.is_cpu() ? t : t.cpu(); };
  return {answer, host(iters_), host(stats_[kAbs]), host(stats_[kRel]), host(converged_),
          host(diverged_), host(trace_.narrow(0, 0, k_))};
}

// Without autograd, iterates live in up to three buffers of our own, reused (~10 us a step
// less than fresh outputs at 64 KB, between two evaluations of a real fn). A buffer is free
// when it is neither the current iterate nor the best one (keep_).
at::Tensor PicardLoop::free_buffer(const at::Tensor& x) {
  for (const at::Tensor& b : pool_) {
    if (!b.is_same(x) && !b.is_same(keep_)) return b;
  }
  pool_.push_back(empty_output(x.sizes(), x.options()));
  return pool_.back();
}

}  // namespace fastpicard
