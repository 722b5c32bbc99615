// PicardLoop: the solver's loop state and one step of it, as a TorchScript custom class
// (torch.classes.fastpicard.PicardLoop) so that Python makes one call per iteration:
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
#include <torch/custom_class.h>
#include <torch/library.h>

#include <limits>
#include <vector>

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
using ControlFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&,
    at::Tensor&, int64_t, double, bool, double);

class PicardLoop : public torch::CustomClassHolder {
 public:
  PicardLoop(const at::Tensor& x0, double alpha, const c10::optional<at::Tensor>& batch,
             int64_t num_samples, bool leading, double tol, bool rel, int64_t max_iter,
             double divergence_factor, int64_t check_every, bool reuse_buffers)
      : alpha_(alpha), batch_(batch), S_(num_samples), leading_(leading), tol_(tol), rel_(rel),
        max_iter_(max_iter), factor_(divergence_factor), check_every_(check_every),
        reuse_(reuse_buffers), shape_(x0.sizes().vec()), keep_(x0) {
    TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, "PicardLoop: alpha must lie in [0, 1), got ",
                      alpha);
    TORCH_CHECK_VALUE(tol > 0.0, "PicardLoop: tol must be > 0, got ", tol);
    TORCH_CHECK_VALUE(max_iter >= 1, "PicardLoop: max_iter must be >= 1, got ", max_iter);
    TORCH_CHECK_VALUE(check_every >= 1, "PicardLoop: check_every must be >= 1, got ",
                      check_every);
    TORCH_CHECK_VALUE(divergence_factor > 1.0, "PicardLoop: divergence_factor must be > 1");
    TORCH_CHECK_VALUE(num_samples >= 0, "PicardLoop: num_samples must be >= 0");
    TORCH_CHECK_VALUE(batch.has_value() || num_samples == 1,
                      "PicardLoop: num_samples != 1 needs a batch vector");
    TORCH_CHECK_VALUE(!leading || (batch.has_value() && x0.dim() >= 1 &&
                                   x0.size(0) == num_samples),
                      "PicardLoop: leading needs one sample per row of x0");
    const auto sd = x0.options().dtype(stat_dtype(x0.scalar_type()));
    const auto inf = std::numeric_limits<double>::infinity();
    const auto nan = std::numeric_limits<double>::quiet_NaN();
    frozen_ = at::zeros({S_}, sd.dtype(at::kBool));
    status_ = at::zeros({S_}, sd.dtype(at::kChar));
    iters_ = at::zeros({S_}, sd.dtype(at::kLong));
    stats_ = at::empty({kStatRows, S_}, sd);
    stats_.narrow(0, kMinAbs, 3).fill_(inf);  // min, best abs, best rel
    stats_.narrow(0, kLastAbs, 2).fill_(nan);
    trace_ = at::full({std::min<int64_t>(max_iter, 64), S_}, nan, sd);
  }

  // One step from x_k and z = fn(x_k). Returns (x_{k+1}, active, diverged): sample counts
  // read on check steps, -1 on the others.
  std::tuple<at::Tensor, int64_t, int64_t> step(const at::Tensor& x, const at::Tensor& z) {
    TORCH_CHECK(k_ < max_iter_, "PicardLoop: step ", k_, " beyond max_iter=", max_iter_);
    if (k_ == trace_.size(0)) {  // grow the trace geometrically
      const int64_t more = std::min(trace_.size(0), max_iter_ - k_);
      trace_ = at::cat({trace_, at::full({more, S_}, std::numeric_limits<double>::quiet_NaN(),
                                         trace_.options())});
    }
    static auto update = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastpicard::picard_update", "")
                             .typed<UpdateFn>();
    static auto control = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("fastpicard::picard_control_", "")
                              .typed<ControlFn>();
    static auto update_out = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("fastpicard::picard_update_out", "")
                                 .typed<UpdateOutFn>();
    const bool recorded = at::GradMode::is_enabled() && (x.requires_grad() || z.requires_grad());
    at::Tensor x_new, res, norm;
    if (recorded) {
      // picard_update's autograd saves the mask, which the control op below updates in
      // place: a recorded step gets its own copy.
      std::tie(x_new, res, norm) = update.call(x, z, alpha_, batch_, S_, frozen_.clone(), true);
    } else if (reuse_) {
      x_new = free_buffer(x);
      std::tie(res, norm) = update_out.call(x, z, alpha_, batch_, S_, frozen_, true, x_new);
    } else {
      std::tie(x_new, res, norm) = update.call(x, z, alpha_, batch_, S_, frozen_, true);
    }
    at::Tensor improved, new_div, summary;
    {
      at::AutoDispatchBelowADInplaceOrView guard;  // bookkeeping: no autograd
      std::tie(improved, new_div, summary) = control.call(
          res, norm, frozen_, status_, iters_, stats_, trace_, k_, tol_, rel_, factor_);
    }
    ++k_;
    if (k_ % check_every_ != 0 && k_ != max_iter_) {  // no host read: select on the device
      keep_ = at::where(rows(improved), x_new, keep_);
      return {at::where(rows(new_div), x, x_new), -1, -1};
    }
    const at::Tensor s = summary.cpu();  // the host read (a sync on accelerators)
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

  // A per-sample bool mask broadcast over the rows of x.
  at::Tensor rows(const at::Tensor& mask) const {
    std::vector<int64_t> shape(shape_.size(), 1);
    if (!batch_.has_value()) return mask.view(shape);
    shape[0] = -1;
    return (leading_ ? mask : mask.index_select(0, *batch_)).view(shape);
  }

  at::Tensor active() const { return status_.eq(kActive); }

  // The answer from the last iterate: samples still running return their best iterate.
  at::Tensor finish(const at::Tensor& x) const {
    if (n_active_ == 0) return x;
    return at::where(rows(active()), keep_, x);
  }

  // One float64 tensor on the host, copied in one transfer: rows (iterations, abs residual,
  // rel residual, status, trace[0..steps)). Samples still running report their best
  // iterate's residuals.
  at::Tensor stats() const {
    const at::Tensor act = active();
    const auto f64 = stats_.options().dtype(at::kDouble);
    return at::cat({iters_.to(f64).unsqueeze(0),
                    at::where(act, stats_.narrow(0, kBestAbs, 2), stats_.narrow(0, kLastAbs, 2))
                        .to(f64),
                    status_.to(f64).unsqueeze(0), trace_.narrow(0, 0, k_).to(f64)})
        .cpu();
  }

  int64_t steps() const { return k_; }

 private:
  // Without autograd, iterates live in up to three buffers of our own, reused: fresh
  // outputs cost an allocation and, for large ones, page faults every step. A buffer is
  // free when it is neither the current iterate nor the best one (keep_).
  at::Tensor free_buffer(const at::Tensor& x) {
    for (const at::Tensor& b : pool_) {
      if (!b.is_same(x) && !b.is_same(keep_)) return b;
    }
    pool_.push_back(empty_output(x.sizes(), x.options()));
    return pool_.back();
  }

  double alpha_;
  c10::optional<at::Tensor> batch_;
  int64_t S_;
  bool leading_;
  double tol_;
  bool rel_;
  int64_t max_iter_;
  double factor_;
  int64_t check_every_;
  bool reuse_;  // false when the caller keeps past iterates (Anderson's history)
  std::vector<at::Tensor> pool_;
  std::vector<int64_t> shape_;
  at::Tensor keep_, frozen_, status_, iters_, stats_, trace_;
  int64_t k_ = 0;
  int64_t n_active_ = -1;  // active samples at the last host read (-1: never read)
};

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  m.class_<PicardLoop>("PicardLoop")
      .def(torch::init<at::Tensor, double, c10::optional<at::Tensor>, int64_t,
                       bool, double, bool, int64_t, double, int64_t, bool>())
      .def("step", &PicardLoop::step)
      .def("rows", &PicardLoop::rows)
      .def("active", &PicardLoop::active)
      .def("finish", &PicardLoop::finish)
      .def("stats", &PicardLoop::stats)
      .def("steps", &PicardLoop::steps);
}

}  // namespace fastpicard
