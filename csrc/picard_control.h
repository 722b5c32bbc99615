// fastpicard::picard_control_ — per-sample convergence bookkeeping of one solver step.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace fastpicard {

// Rows of the packed per-sample statistics tensor `stats` [kStatRows, S].
enum StatRow : int64_t { kMinAbs = 0, kBestAbs, kBestRel, kLastAbs, kLastRel, kStatRows };

// Sample status codes in `status` (int8 [S]).
enum Status : int8_t { kActive = 0, kConverged = 1, kDiverged = 2 };

// Entries of the int64 [4] summary output.
enum Summary : int64_t { kNumActive = 0, kNumImproved, kNumNewDiverged, kNumDiverged, kSummaryLen };

void check_picard_control_args(const at::Tensor& res, const at::Tensor& norm,
                               const at::Tensor& frozen, const at::Tensor& status,
                               const at::Tensor& iters, const at::Tensor& stats,
                               const at::Tensor& trace, int64_t step);

// The device-generic implementation (at:: ops, no host sync): the kernel for every device
// without a dedicated one, and the cross-check of the CPU kernel in tests.
std::tuple<at::Tensor, at::Tensor, at::Tensor> picard_control_generic(
    const at::Tensor& res, const at::Tensor& norm, at::Tensor& frozen, at::Tensor& status,
    at::Tensor& iters, at::Tensor& stats, at::Tensor& trace, int64_t step, double tol, bool rel,
    double divergence_factor);

}  // namespace fastpicard
