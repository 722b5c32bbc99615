// fastpicard::picard_control_ — per-sample convergence bookkeeping of one solver step.
#pragma once
#include <ATen/ATen.h>

namespace fastpicard {

// Rows of the per-sample statistics tensor `stats` [kStatRows, S]: the smallest residual so
// far (divergence rule) and the result residuals — those of the best iterate while a sample
// runs, those of its last step once it stopped.
enum StatRow : int64_t { kMinAbs = 0, kAbs, kRel, kStatRows };

// Entries of the int64 [4] summary output.
enum Summary : int64_t { kNumActive = 0, kNumImproved, kNumNewDiverged, kNumDiverged, kSummaryLen };

void check_picard_control_args(const at::Tensor& res, const at::Tensor& norm,
                               const at::Tensor& frozen, const at::Tensor& converged,
                               const at::Tensor& diverged, const at::Tensor& iters,
                               const at::Tensor& stats, const at::Tensor& trace,
                               const at::Tensor& improved, const at::Tensor& new_div,
                               const at::Tensor& summary, int64_t step);

// The device-generic implementation (at:: ops, no host sync): the kernel for every device
// without a dedicated one, and the cross-check of the CPU kernel in tests.
void picard_control_generic(const at::Tensor& res, const at::Tensor& norm, at::Tensor& frozen,
                            at::Tensor& converged, at::Tensor& diverged, at::Tensor& iters,
                            at::Tensor& stats, at::Tensor& trace, at::Tensor& improved,
                            at::Tensor& new_div, at::Tensor& summary, int64_t step, double tol,
                            bool rel, double divergence_factor);

}  // namespace fastpicard
