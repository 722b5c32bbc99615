// Schemas of the picard_update ops and their shared argument checks.
#include "picard_update.h"

#include <torch/library.h>

namespace fastpicard {

void check_picard_update_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                              const c10::optional<at::Tensor>& batch, int64_t num_samples,
                              const c10::optional<at::Tensor>& frozen) {
  TORCH_CHECK_VALUE(x.sizes() == z.sizes(), "picard_update: z has shape ", z.sizes(),
                    " but x has shape ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == z.scalar_type(), "picard_update: z has dtype ",
                   z.scalar_type(), " but x has dtype ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device() == z.device(), "picard_update: z is on ", z.device(),
                    " but x is on ", x.device());
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, "picard_update: alpha must lie in [0, 1), got ",
                    alpha);
  TORCH_CHECK_VALUE(num_samples >= 0, "picard_update: num_samples must be >= 0, got ",
                    num_samples);
  if (batch.has_value()) {
    const auto& b = *batch;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kLong, "picard_update: batch must be int64, got ",
                     b.scalar_type());
    TORCH_CHECK_VALUE(x.dim() >= 1 && b.dim() == 1 && b.size(0) == x.size(0),
                      "picard_update: batch must have shape [", x.dim() ? x.size(0) : 1,
                      "] (one id per row of x), got ", b.sizes());
    TORCH_CHECK_VALUE(b.device() == x.device(), "picard_update: batch is on ", b.device(),
                      " but x is on ", x.device());
  } else {
    TORCH_CHECK_VALUE(num_samples == 1, "picard_update: num_samples=", num_samples,
                      " needs a batch vector");
  }
  if (frozen.has_value()) {
    const auto& f = *frozen;
    TORCH_CHECK_TYPE(f.scalar_type() == at::kBool, "picard_update: frozen must be bool, got ",
                     f.scalar_type());
    TORCH_CHECK_VALUE(f.dim() == 1 && f.size(0) == num_samples,
                      "picard_update: frozen must have shape [num_samples=", num_samples,
                      "], got ", f.sizes());
    TORCH_CHECK_VALUE(f.device() == x.device(), "picard_update: frozen is on ", f.device(),
                      " but x is on ", x.device());
  }
}

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // x_new = alpha*x + (1-alpha)*z; returns (x_new, res [S], norm [S or 0]).
  m.def(
      "picard_update(Tensor x, Tensor z, float alpha, Tensor? batch=None, int num_samples=1, "
      "Tensor? frozen=None, bool return_norm=False) -> (Tensor, Tensor, Tensor)");
  // Same, writing x_new into `out` (which may alias x or z); returns (res, norm).
  m.def(
      "picard_update_out(Tensor x, Tensor z, float alpha, Tensor? batch, int num_samples, "
      "Tensor? frozen, bool return_norm, Tensor(a!) out) -> (Tensor, Tensor)");
}

}  // namespace fastpicard
