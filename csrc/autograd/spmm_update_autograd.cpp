// Autograd of spmm_update (the internal _spmm_update), shared by every backend (CPU kernel,
// Triton on CUDA): the backward is the public fastpicard::spmm_update_backward op, which
// checks what it is given again (transposed CSR, no atomics). The
// forward keeps act(A.h + bias) for the backward (not for act='identity'); the dropout mask
// is regenerated from the seed. res, norm and act_out carry no gradient.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "common.h"

namespace fastpicard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;
using Out4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// argument positions of the forward (for the gradient list)
constexpr size_t kNumArgs = 20, kWeight = 2, kH = 7, kX = 8, kBias = 10;

bool requires_grad(const OptTensor& t) { return t.has_value() && t->requires_grad(); }

Out4 call_forward(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
                  const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                  const OptTensor& t_weight, const at::Tensor& h, const at::Tensor& x, double alpha, const OptTensor& bias,
                  c10::string_view act, double slope, double dropout, const OptTensor& seed,
                  const OptTensor& batch, int64_t num_samples, const OptTensor& frozen,
                  bool return_norm, bool save_act) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_spmm_update", "")
                       .typed<Out4(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const OptTensor&, const at::Tensor&, const at::Tensor&,
                                   double, const OptTensor&,
                                   c10::string_view, double, double, const OptTensor&,
                                   const OptTensor&, int64_t, const OptTensor&, bool, bool)>();
  return op.call(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias, act,
                 slope,
                 dropout, seed, batch, num_samples, frozen, return_norm, save_act);
}

class SpmmUpdate : public torch::autograd::Function<SpmmUpdate> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& rowptr,
                               const at::Tensor& col, const OptTensor& weight,
                               const at::Tensor& t_rowptr, const at::Tensor& t_col,
                               const at::Tensor& t_perm, const OptTensor& t_weight,
                               const at::Tensor& h, const at::Tensor& x, double alpha,
                               const OptTensor& bias,
                               std::string act, double slope, double dropout,
                               const OptTensor& seed, const OptTensor& batch,
                               int64_t num_samples, const OptTensor& frozen, bool return_norm,
                               bool save_act) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const bool keep_act = act != "identity";
    auto [out, res, norm, y] =
        call_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha, bias,
                     act, slope, dropout, seed, batch, num_samples, frozen, return_norm,
                     save_act || keep_act);
    const bool need_w = requires_grad(weight);
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["act"] = act;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["need_h"] = h.requires_grad();
    ctx->saved_data["need_x"] = x.requires_grad();
    ctx->saved_data["need_w"] = need_w;
    ctx->saved_data["need_b"] = requires_grad(bias);
    ctx->save_for_backward({rowptr, col, weight.value_or(at::Tensor()), t_rowptr, t_col, t_perm,
                            need_w ? h : at::Tensor(), keep_act ? y : at::Tensor(),
                            seed.value_or(at::Tensor()), batch.value_or(at::Tensor()),
                            frozen.value_or(at::Tensor()), t_weight.value_or(at::Tensor())});
    at::Tensor act_out = save_act ? y : at::empty({0}, h.options());
    ctx->mark_non_differentiable({res, norm, act_out});
    return {out, res, norm, act_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(kNumArgs);
    const at::Tensor& g = grads[0];
    if (!g.defined()) return result;
    check_first_order_backward("spmm_update");
    const auto s = ctx->get_saved_variables();
    auto opt = [](const at::Tensor& t) -> OptTensor {
      return t.defined() ? OptTensor(t) : c10::nullopt;
    };
    const bool need_h = ctx->saved_data["need_h"].toBool();
    const bool need_x = ctx->saved_data["need_x"].toBool();
    const bool need_w = ctx->saved_data["need_w"].toBool();
    const bool need_b = ctx->saved_data["need_b"].toBool();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastpicard::spmm_update_backward", "")
                         .typed<Out4(const at::Tensor&, const OptTensor&, const at::Tensor&,
                                     const at::Tensor&, const OptTensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const OptTensor&,
                                     const OptTensor&, double, c10::string_view, double, double, const OptTensor&,
                                     const OptTensor&, const OptTensor&, bool, bool, bool,
                                     bool)>();
    const std::string act = ctx->saved_data["act"].toStringRef();
    auto [gh, gx, gw, gb] =
        op.call(g, opt(s[7]), s[0], s[1], opt(s[2]), s[3], s[4], s[5], opt(s[11]), opt(s[6]),
                ctx->saved_data["alpha"].toDouble(), act, ctx->saved_data["slope"].toDouble(),
                ctx->saved_data["dropout"].toDouble(), opt(s[8]), opt(s[9]), opt(s[10]),
                need_h, need_x, need_w, need_b);
    if (need_w) result[kWeight] = gw;
    if (need_h) result[kH] = gh;
    if (need_x) result[kX] = gx;
    if (need_b) result[kBias] = gb;
    return result;
  }
};

Out4 spmm_update_autograd(const at::Tensor& rowptr, const at::Tensor& col,
                          const OptTensor& weight, const at::Tensor& t_rowptr,
                          const at::Tensor& t_col, const at::Tensor& t_perm,
                          const OptTensor& t_weight, const at::Tensor& h, const at::Tensor& x,
                          double alpha, const OptTensor& bias,
                          c10::string_view act, double slope, double dropout,
                          const OptTensor& seed, const OptTensor& batch, int64_t num_samples,
                          const OptTensor& frozen, bool return_norm, bool save_act) {
  const bool any_grad = at::GradMode::is_enabled() &&
                        (h.requires_grad() || x.requires_grad() || requires_grad(weight) ||
                         requires_grad(bias));
  if (!any_grad) {  // inference: no act_out kept, no graph recorded
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x, alpha,
                        bias, act, slope, dropout, seed, batch, num_samples, frozen, return_norm,
                        save_act);
  }
  auto r = SpmmUpdate::apply(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, x,
                             alpha, bias, std::string(act), slope, dropout, seed, batch, num_samples, frozen,
                             return_norm, save_act);
  return {r[0], r[1], r[2], r[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, Autograd, m) {
  m.impl("_spmm_update", &spmm_update_autograd);
}

}  // namespace fastpicard
