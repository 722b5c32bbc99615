// PicardLoop: one solve's loop state (per-sample flags, counters, residuals, trace, best
// iterate) and its step. Shared by _C.PicardLoop (fn in Python, one call per iteration) and
// the fused GCN loop (the whole iteration in C++).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <mutex>
#include <tuple>
#include <vector>

namespace fastpicard {

// (answer, iterations, abs residual, rel residual, converged, diverged, trace[:steps])
using LoopResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                              at::Tensor, at::Tensor>;

class PicardLoop {
 public:
  PicardLoop(const at::Tensor& x0, double alpha, const c10::optional<at::Tensor>& batch,
             int64_t num_samples, bool leading, double tol, bool rel, int64_t max_iter,
             double divergence_factor, int64_t check_every, bool reuse_buffers);

  // One step from x_k and z = fn(x_k): picard_update, then advance(). Returns (x_{k+1},
  // active, diverged): sample counts read on check steps, -1 on the others. x must be shaped
  // like x0, and z like x (the solver's contract for fn, checked here: every step).
  std::tuple<at::Tensor, int64_t, int64_t> step(const at::Tensor& x, const at::Tensor& z);

  // The bookkeeping half of a step, for callers that computed x_new (with per-sample res
  // and norm) themselves from x with frozen_mask(recorded): stopping rules, best iterate,
  // divergence rollback, host read on check steps.
  std::tuple<at::Tensor, int64_t, int64_t> advance(const at::Tensor& x, at::Tensor x_new,
                                                   const at::Tensor& res,
                                                   const at::Tensor& norm, bool recorded);

  // The frozen mask for this step's update kernel. A recorded (autograd) step gets a copy:
  // the kernel's autograd saves it, and advance() updates the mask in place.
  at::Tensor frozen_mask(bool recorded) const { return recorded ? frozen_.clone() : frozen_; }

  // A per-sample bool mask broadcast over the rows of x.
  at::Tensor rows(const at::Tensor& mask) const;
  at::Tensor active() const { return frozen_.logical_not(); }
  int64_t steps() const { return k_; }
  double alpha() const { return alpha_; }
  const c10::optional<at::Tensor>& batch() const { return batch_; }
  int64_t num_samples() const { return S_; }

  // The answer (samples still running return their best iterate) and the statistics on the
  // host, each copied once; running samples report their best iterate's residuals.
  LoopResult finish(const at::Tensor& x) const;

  // Held by the Python binding around each call: one loop shared by threads stays
  // consistent (the calls release the GIL).
  std::mutex& mutex() const { return mutex_; }

 private:
  at::Tensor free_buffer(const at::Tensor& x);
  void check_iterate(const char* what, const at::Tensor& x) const;  // x is shaped like x0

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
  at::ScalarType dtype_;
  at::Device device_;
  at::Tensor keep_, flags_, frozen_, converged_, diverged_, improved_, new_div_;
  at::Tensor counts_, iters_, summary_, stats_, trace_;
  int64_t k_ = 0;
  int64_t n_active_ = -1;  // active samples at the last host read (-1: never read)
  mutable std::mutex mutex_;
};

}  // namespace fastpicard
