// fastpicard::picard_update — fused smoothed Picard update with per-sample residual.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace fastpicard {

// The checks of picard_update's arguments (everything but the values of batch, which the
// kernels check); messages name the Python argument.
void check_picard_update_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                              const c10::optional<at::Tensor>& batch, int64_t num_samples,
                              const c10::optional<at::Tensor>& frozen);

// The same for picard_update_out, and out: shaped like x, contiguous, memory of its own or
// x/z exactly, never needing a gradient.
void check_picard_update_out_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                                  const c10::optional<at::Tensor>& batch, int64_t num_samples,
                                  const c10::optional<at::Tensor>& frozen, const at::Tensor& out);

}  // namespace fastpicard
