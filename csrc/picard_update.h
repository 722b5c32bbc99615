// fastpicard::picard_update — fused smoothed Picard update with per-sample residual.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace fastpicard {

// Argument checks shared by every kernel of the op; messages name the Python argument.
void check_picard_update_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                              const c10::optional<at::Tensor>& batch, int64_t num_samples,
                              const c10::optional<at::Tensor>& frozen);

}  // namespace fastpicard
