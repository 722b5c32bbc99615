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

}  // namespace fastpicard
