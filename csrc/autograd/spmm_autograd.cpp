// Autograd of spmm (the internal _spmm), shared by every backend: the backward is the public
// fastpicard::spmm_backward op, which checks what it is given again (transposed CSR; for max
// only the edge that attained each output gets its gradient). arg carries no gradient.
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
using Out2 = std::tuple<at::Tensor, at::Tensor>;

constexpr size_t kNumArgs = 9, kWeight = 2, kH = 7;

Out2 call_forward(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
                  const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                  const OptTensor& t_weight, const at::Tensor& h, c10::string_view reduce) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_spmm", "")
                       .typed<Out2(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const OptTensor&, const at::Tensor&, c10::string_view)>();
  return op.call(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce);
}

class Spmm : public torch::autograd::Function<Spmm> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& rowptr,
                               const at::Tensor& col, const OptTensor& weight,
                               const at::Tensor& t_rowptr, const at::Tensor& t_col,
                               const at::Tensor& t_perm, const OptTensor& t_weight,
                               const at::Tensor& h, std::string reduce) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, arg] =
        call_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce);
    const bool need_w = weight.has_value() && weight->requires_grad();
    ctx->saved_data["reduce"] = reduce;
    ctx->saved_data["need_h"] = h.requires_grad();
    ctx->saved_data["need_w"] = need_w;
    ctx->save_for_backward({rowptr, col, weight.value_or(at::Tensor()), t_rowptr, t_col, t_perm,
                            need_w ? h : at::Tensor(), arg, t_weight.value_or(at::Tensor())});
    ctx->mark_non_differentiable({arg});
    return {out, arg};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(kNumArgs);
    const at::Tensor& g = grads[0];
    if (!g.defined()) return result;
    check_first_order_backward("spmm");
    const auto s = ctx->get_saved_variables();
    auto opt = [](const at::Tensor& t) -> OptTensor {
      return t.defined() ? OptTensor(t) : c10::nullopt;
    };
    const bool need_h = ctx->saved_data["need_h"].toBool();
    const bool need_w = ctx->saved_data["need_w"].toBool();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastpicard::spmm_backward", "")
                         .typed<Out2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const OptTensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const OptTensor&, const OptTensor&,
                                     const at::Tensor&, c10::string_view, bool, bool)>();
    const std::string reduce = ctx->saved_data["reduce"].toStringRef();
    auto [gh, gw] = op.call(g, s[0], s[1], opt(s[2]), s[3], s[4], s[5], opt(s[8]), opt(s[6]),
                            s[7], reduce, need_h, need_w);
    if (need_h) result[kH] = gh;
    if (need_w) result[kWeight] = gw;
    return result;
  }
};

Out2 spmm_autograd(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
                   const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
                   const OptTensor& t_weight, const at::Tensor& h, c10::string_view reduce) {
  const bool any_grad = at::GradMode::is_enabled() &&
                        (h.requires_grad() || (weight.has_value() && weight->requires_grad()));
  if (!any_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce);
  }
  auto r = Spmm::apply(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h,
                       std::string(reduce));
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, Autograd, m) {
  m.impl("_spmm", &spmm_autograd);
}

}  // namespace fastpicard
