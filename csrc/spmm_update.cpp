// Schemas of the spmm_update ops and their argument checks. As for every op (see
// picard_update.cpp): the public ops' only kernel checks the arguments and calls the internal
// op (_spmm_update, _spmm_update_backward) that holds the CPU, CUDA, fake and autograd
// kernels; spmm_update_check runs the checks alone (for the pure-torch reference).
#include "spmm_update.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "spmm.h"

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

namespace {

using OptTensor = c10::optional<at::Tensor>;
using Out4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The scalar options and the dropout seed, shared by the forward and the backward.
void check_step_options(const char* op, const at::Tensor& h, double alpha, c10::string_view act,
                        double negative_slope, double dropout, const OptTensor& seed) {
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, op, ": alpha must lie in [0, 1), got ", alpha);
  parse_act(act);
  TORCH_CHECK_VALUE(std::isfinite(negative_slope) && negative_slope >= 0.0, op,
                    ": negative_slope must be finite and >= 0, got ", negative_slope);
  TORCH_CHECK_VALUE(dropout >= 0.0 && dropout < 1.0, op, ": dropout must lie in [0, 1), got ",
                    dropout);
  if (dropout > 0.0) {
    TORCH_CHECK_VALUE(seed.has_value(), op, ": dropout > 0 needs a seed tensor");
    const auto& s = *seed;
    TORCH_CHECK_TYPE(s.scalar_type() == at::kLong, op, ": seed must be int64, got ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == 2, op, ": seed must have shape [2] "
                      "(seed, offset), got ", s.sizes());
  }
  if (seed.has_value()) check_device(op, "seed", *seed, "h", h);
}

void check_spmm_update_args(const at::Tensor& rowptr, const at::Tensor& col,
                            const OptTensor& weight, const at::Tensor& t_rowptr,
                            const at::Tensor& t_col, const at::Tensor& t_perm,
                            const OptTensor& t_weight, const at::Tensor& h, const at::Tensor& x,
                            double alpha, const OptTensor& bias, c10::string_view act,
                            double negative_slope, double dropout, const OptTensor& seed,
                            const OptTensor& batch, int64_t num_samples, const OptTensor& frozen,
                            bool return_norm, bool save_act) {
  const char* op = "spmm_update";
  check_graph_args(op, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h);
  check_like(op, "x", x, "h", h);
  check_step_options(op, h, alpha, act, negative_slope, dropout, seed);
  if (bias.has_value()) {
    const auto& b = *bias;
    TORCH_CHECK_TYPE(b.scalar_type() == h.scalar_type(), op, ": bias has dtype ",
                     b.scalar_type(), " but h has dtype ", h.scalar_type());
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == h.size(1), op, ": bias must have shape [",
                      h.size(1), "], got ", b.sizes());
    check_device(op, "bias", b, "h", h);
  }
  check_samples(op, batch, num_samples, h.size(0), "node", h);
  check_frozen(op, frozen, num_samples, h);
}

void check_spmm_update_backward_args(
    const at::Tensor& grad, const OptTensor& act_out, const at::Tensor& rowptr,
    const at::Tensor& col, const OptTensor& weight, const at::Tensor& t_rowptr,
    const at::Tensor& t_col, const at::Tensor& t_perm, const OptTensor& t_weight,
    const OptTensor& h, double alpha, c10::string_view act, double negative_slope, double dropout,
    const OptTensor& seed, const OptTensor& batch, const OptTensor& frozen, bool need_h,
    bool need_x, bool need_weight, bool need_bias) {
  const char* op = "spmm_update_backward";
  check_graph_args(op, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, grad, "grad");
  check_step_options(op, grad, alpha, act, negative_slope, dropout, seed);
  if (act_out.has_value()) check_like(op, "act_out", *act_out, "grad", grad);
  TORCH_CHECK_VALUE(parse_act(act) == graph_cpu::Act::kIdentity || act_out.has_value(), op,
                    ": act_out is needed for act='", act, "'");
  if (h.has_value()) check_like(op, "h", *h, "grad", grad);
  TORCH_CHECK_VALUE(!need_weight || (h.has_value() && weight.has_value()), op,
                    ": need_weight needs weight and h");
  // batch only serves to index frozen: the samples are frozen's (one without a batch)
  int64_t num_samples = 1;
  if (batch.has_value()) {
    num_samples = frozen.has_value() && frozen->dim() == 1 ? frozen->size(0)
                                                            : std::min<int64_t>(grad.size(0), 1);
  }
  check_samples(op, batch, num_samples, grad.size(0), "node", grad);
  check_frozen(op, frozen, num_samples, grad);
}

Out4 spmm_update(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
                 const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                 const OptTensor& t_weight, const at::Tensor& h, const at::Tensor& x,
                 double alpha, const OptTensor& bias, c10::string_view act, double slope,
                 double dropout, const OptTensor& seed, const OptTensor& batch,
                 int64_t num_samples, const OptTensor& frozen, bool return_norm, bool save_act) {
  check_spmm_update_args(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                         bias, act, slope, dropout, seed, batch, num_samples, frozen,
                         return_norm, save_act);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastpicard::_spmm_update", "")
          .typed<Out4(const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                      const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                      const at::Tensor&, double, const OptTensor&, c10::string_view, double,
                      double, const OptTensor&, const OptTensor&, int64_t, const OptTensor&, bool,
                      bool)>();
  return op.call(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias, act,
                 slope, dropout, seed, batch, num_samples, frozen, return_norm, save_act);
}

Out4 spmm_update_backward(const at::Tensor& grad, const OptTensor& act_out,
                          const at::Tensor& rowptr, const at::Tensor& col,
                          const OptTensor& weight, const at::Tensor& t_rowptr,
                          const at::Tensor& t_col, const at::Tensor& t_perm,
                          const OptTensor& t_weight, const OptTensor& h, double alpha,
                          c10::string_view act, double slope, double dropout,
                          const OptTensor& seed, const OptTensor& batch, const OptTensor& frozen,
                          bool need_h, bool need_x, bool need_weight, bool need_bias) {
  check_spmm_update_backward_args(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm,
                                  t_weight, h, alpha, act, slope, dropout, seed, batch, frozen,
                                  need_h, need_x, need_weight, need_bias);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastpicard::_spmm_update_backward", "")
          .typed<Out4(const at::Tensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
                      const OptTensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const OptTensor&, const OptTensor&, double, c10::string_view, double,
                      double, const OptTensor&, const OptTensor&, const OptTensor&, bool, bool,
                      bool, bool)>();
  return op.call(grad, act_out, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, alpha,
                 act, slope, dropout, seed, batch, frozen, need_h, need_x, need_weight,
                 need_bias);
}

}  // namespace

#define ARGS                                                                                   \
  "(Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, Tensor t_col, Tensor t_perm, " \
  "Tensor? t_weight, Tensor h, Tensor x, float alpha, Tensor? bias=None, str act=\"relu\", "    \
  "float negative_slope=0.01, float dropout=0.0, Tensor? seed=None, Tensor? batch=None, "      \
  "int num_samples=1, Tensor? frozen=None, bool return_norm=False, bool save_act=False)"
#define BACKWARD_ARGS                                                                          \
  "(Tensor grad, Tensor? act_out, Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, " \
  "Tensor t_col, Tensor t_perm, Tensor? t_weight, Tensor? h, float alpha, str act, "           \
  "float negative_slope, float dropout, Tensor? seed, Tensor? batch, Tensor? frozen, "         \
  "bool need_h, bool need_x, bool need_weight, bool need_bias)"

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // One smoothed Picard step of a GCN-style layer, fused per CSR row:
  //   z = dropout(act(A.h + bias)), x_new = alpha*x + (1-alpha)*z (x for frozen samples),
  // with A given by (rowptr, col, weight) and its transpose (t_rowptr, t_col, t_perm, t_weight)
  // for the backward. Dropout keeps an element when a hash of (seed, offset, row, feature)
  // passes the threshold; the mask is regenerated in the backward, never stored.
  // Returns (x_new [N, F], res [S], norm [S] or [0], act_out): res/norm are ||x_new - x|| and
  // ||x_new|| per sample (float32, float64 for float64 data); act_out = act(A.h + bias) when
  // save_act, else empty (the autograd kernel keeps its own copy for the backward).
  m.def("spmm_update" ARGS " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_spmm_update" ARGS " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("spmm_update_check" ARGS " -> ()");
  // Gradients of spmm_update given d loss / d x_new and act_out:
  // (grad_h, grad_x, grad_weight, grad_bias), each empty when not asked for. h is needed
  // only for grad_weight, act_out only for act != identity.
  m.def("spmm_update_backward" BACKWARD_ARGS " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_spmm_update_backward" BACKWARD_ARGS " -> (Tensor, Tensor, Tensor, Tensor)");
}
#undef ARGS
#undef BACKWARD_ARGS

TORCH_LIBRARY_IMPL(fastpicard, CompositeImplicitAutograd, m) {
  m.impl("spmm_update", &spmm_update);
  m.impl("spmm_update_check", &check_spmm_update_args);
  m.impl("spmm_update_backward", &spmm_update_backward);
}

}  // namespace fastpicard
