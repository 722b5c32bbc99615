// Schemas of the spmm_update ops and their argument checks.
#include "spmm_update.h"

#include <torch/library.h>

#include <cmath>

namespace fastpicard {

graph_cpu::Act parse_act(c10::string_view act) {
  using graph_cpu::Act;
  if (act == "relu") return Act::kRelu;
  if (act == "identity") return Act::kIdentity;
  if (act == "tanh") return Act::kTanh;
  if (act == "leaky_relu") return Act::kLeakyRelu;
  TORCH_CHECK_VALUE(false, "spmm_update: act must be 'relu', 'identity', 'tanh' or 'leaky_relu', "
                    "got '", act, "'");
}

void check_spmm_update_args(const at::Tensor& h, const at::Tensor& x, double alpha,
                            const c10::optional<at::Tensor>& bias, c10::string_view act,
                            double negative_slope, double dropout,
                            const c10::optional<at::Tensor>& seed,
                            const c10::optional<at::Tensor>& batch, int64_t num_samples,
                            const c10::optional<at::Tensor>& frozen) {
  TORCH_CHECK_VALUE(x.sizes() == h.sizes(), "spmm_update: x has shape ", x.sizes(),
                    " but h has shape ", h.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == h.scalar_type(), "spmm_update: x has dtype ",
                   x.scalar_type(), " but h has dtype ", h.scalar_type());
  TORCH_CHECK_VALUE(x.device() == h.device(), "spmm_update: x is on ", x.device(),
                    " but h is on ", h.device());
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, "spmm_update: alpha must lie in [0, 1), got ",
                    alpha);
  parse_act(act);
  TORCH_CHECK_VALUE(std::isfinite(negative_slope) && negative_slope >= 0.0,
                    "spmm_update: negative_slope must be finite and >= 0, got ", negative_slope);
  TORCH_CHECK_VALUE(dropout >= 0.0 && dropout < 1.0, "spmm_update: dropout must lie in [0, 1), got ",
                    dropout);
  if (bias.has_value()) {
    const auto& b = *bias;
    TORCH_CHECK_TYPE(b.scalar_type() == h.scalar_type(), "spmm_update: bias has dtype ",
                     b.scalar_type(), " but h has dtype ", h.scalar_type());
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == h.size(1), "spmm_update: bias must have shape [",
                      h.size(1), "], got ", b.sizes());
    TORCH_CHECK_VALUE(b.device() == h.device(), "spmm_update: bias is on ", b.device(),
                      " but h is on ", h.device());
  }
  if (dropout > 0.0) {
    TORCH_CHECK_VALUE(seed.has_value(), "spmm_update: dropout > 0 needs a seed tensor");
    const auto& s = *seed;
    TORCH_CHECK_TYPE(s.scalar_type() == at::kLong, "spmm_update: seed must be int64, got ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == 2, "spmm_update: seed must have shape [2] "
                      "(seed, offset), got ", s.sizes());
    TORCH_CHECK_VALUE(s.device() == h.device(), "spmm_update: seed is on ", s.device(),
                      " but h is on ", h.device());
  }
  TORCH_CHECK_VALUE(num_samples >= 0, "spmm_update: num_samples must be >= 0, got ", num_samples);
  if (batch.has_value()) {
    const auto& b = *batch;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kLong, "spmm_update: batch must be int64, got ",
                     b.scalar_type());
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == h.size(0), "spmm_update: batch must have shape [",
                      h.size(0), "] (one id per node), got ", b.sizes());
    TORCH_CHECK_VALUE(b.device() == h.device(), "spmm_update: batch is on ", b.device(),
                      " but h is on ", h.device());
  } else {
    TORCH_CHECK_VALUE(num_samples == 1, "spmm_update: num_samples=", num_samples,
                      " needs a batch vector");
  }
  if (frozen.has_value()) {
    const auto& f = *frozen;
    TORCH_CHECK_TYPE(f.scalar_type() == at::kBool, "spmm_update: frozen must be bool, got ",
                     f.scalar_type());
    TORCH_CHECK_VALUE(f.dim() == 1 && f.size(0) == num_samples,
                      "spmm_update: frozen must have shape [num_samples=", num_samples, "], got ",
                      f.sizes());
    TORCH_CHECK_VALUE(f.device() == h.device(), "spmm_update: frozen is on ", f.device(),
                      " but h is on ", h.device());
  }
}

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // One smoothed Picard step of a GCN-style layer, fused per CSR row:
  //   z = dropout(act(A.h + bias)), x_new = alpha*x + (1-alpha)*z (x for frozen samples),
  // with A given by (rowptr, col, weight) and its transpose (t_rowptr, t_col, t_perm, t_weight)
  // for the backward. Dropout keeps an element when a hash of (seed, offset, row, feature) passes the
  // threshold; the mask is regenerated in the backward, never stored.
  // Returns (x_new [N, F], res [S], norm [S] or [0], act_out): res/norm are ||x_new - x|| and
  // ||x_new|| per sample (float32, float64 for float64 data); act_out = act(A.h + bias) when
  // save_act, else empty (the autograd kernel keeps its own copy for the backward).
  m.def(
      "spmm_update(Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, Tensor t_col, "
      "Tensor t_perm, Tensor? t_weight, Tensor h, Tensor x, float alpha, Tensor? bias=None, "
      "str act=\"relu\", float negative_slope=0.01, float dropout=0.0, Tensor? seed=None, "
      "Tensor? batch=None, int num_samples=1, Tensor? frozen=None, bool return_norm=False, "
      "bool save_act=False) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of spmm_update given d loss / d x_new and act_out:
  // (grad_h, grad_x, grad_weight, grad_bias), each empty when not asked for. h is needed
  // only for grad_weight, act_out only for act != identity.
  m.def(
      "spmm_update_backward(Tensor grad, Tensor? act_out, Tensor rowptr, Tensor col, "
      "Tensor? weight, Tensor t_rowptr, Tensor t_col, Tensor t_perm, Tensor? t_weight, "
      "Tensor? h, float alpha, str act, float negative_slope, float dropout, Tensor? seed, "
      "Tensor? batch, Tensor? frozen, bool need_h, bool need_x, bool need_weight, "
      "bool need_bias) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace fastpicard
