// Autograd of picard_update, shared by every backend (CPU kernel, Triton on CUDA):
// d x_new/d x = alpha, d x_new/d z = 1 - alpha; rows of frozen samples pass x through.
// res and norm are loop-control outputs and are marked non-differentiable.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

namespace fastpicard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PicardUpdate : public torch::autograd::Function<PicardUpdate> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& z,
                               double alpha, const c10::optional<at::Tensor>& batch,
                               int64_t num_samples, const c10::optional<at::Tensor>& frozen,
                               bool return_norm) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastpicard::_picard_update", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, double,
                             const c10::optional<at::Tensor>&, int64_t,
                             const c10::optional<at::Tensor>&, bool)>();
    auto [out, res, norm] = op.call(x, z, alpha, batch, num_samples, frozen, return_norm);
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["x_dim"] = x.dim();
    ctx->save_for_backward({batch.value_or(at::Tensor()), frozen.value_or(at::Tensor())});
    ctx->mark_non_differentiable({res, norm});
    return {out, res, norm};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& batch = saved[0];
    const at::Tensor& frozen = saved[1];
    const at::Tensor& g = grads[0];
    if (!g.defined()) return variable_list(7);
    at::Tensor gx = g * alpha, gz = g * (1.0 - alpha);
    if (frozen.defined()) {
      const int64_t rows = g.dim() ? g.size(0) : 1;
      at::Tensor row_frozen = batch.defined() ? frozen.index_select(0, batch)
                                              : frozen.expand({rows});
      std::vector<int64_t> shape(std::max<int64_t>(g.dim(), 1), 1);
      shape[0] = rows;
      if (g.dim() == 0) shape.clear();
      row_frozen = row_frozen.reshape(shape);
      gx = at::where(row_frozen, g, gx);
      gz = at::where(row_frozen, at::zeros_like(gz), gz);
    }
    return {gx, gz, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> picard_update_autograd(
    const at::Tensor& x, const at::Tensor& z, double alpha,
    const c10::optional<at::Tensor>& batch, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen, bool return_norm) {
  auto r = PicardUpdate::apply(x, z, alpha, batch, num_samples, frozen, return_norm);
  return {r[0], r[1], r[2]};
}

// picard_update_out writes out in place: bump its version counter, so autograd refuses a
// backward that saved the overwritten tensor (as for torch's own out= ops).
std::tuple<at::Tensor, at::Tensor> picard_update_out_inplace(
    const at::Tensor& x, const at::Tensor& z, double alpha,
    const c10::optional<at::Tensor>& batch, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen, bool return_norm, at::Tensor& out) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_picard_update_out", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, double,
                           const c10::optional<at::Tensor>&, int64_t,
                           const c10::optional<at::Tensor>&, bool, at::Tensor&)>();
  std::tuple<at::Tensor, at::Tensor> r;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    r = op.call(x, z, alpha, batch, num_samples, frozen, return_norm, out);
  }
  torch::autograd::impl::bump_version(out);
  return r;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, Autograd, m) {
  m.impl("_picard_update", &picard_update_autograd);
}

TORCH_LIBRARY_IMPL(fastpicard, ADInplaceOrView, m) {
  m.impl("_picard_update_out", &picard_update_out_inplace);
}

}  // namespace fastpicard
