// Schemas of the picard_update ops and their argument checks.
//
// Each public op (picard_update, picard_update_out) has one kernel, CompositeImplicitAutograd,
// which every call passes through whatever the device (CPU, CUDA, meta, fake tensors under
// torch.compile): it checks the arguments and calls the internal op (_picard_update[_out]),
// which holds the CPU, CUDA, fake and autograd kernels. The *_check ops run the same checks
// alone, for the pure-torch reference.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"

namespace fastpicard {
namespace {

using Out3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Out2 = std::tuple<at::Tensor, at::Tensor>;
using OptTensor = c10::optional<at::Tensor>;

// Everything but the values of batch, which the kernels check; messages name the Python
// argument.
void check_picard_update_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                              const c10::optional<at::Tensor>& batch, int64_t num_samples,
                              const c10::optional<at::Tensor>& frozen) {
  const char* op = "picard_update";
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                   op, ": x must be float32/float16/bfloat16/float64, got ", dt);
  TORCH_CHECK_VALUE(x.sizes() == z.sizes(), op, ": z has shape ", z.sizes(), " but x has shape ",
                    x.sizes());
  TORCH_CHECK_TYPE(z.scalar_type() == dt, op, ": z has dtype ", z.scalar_type(),
                   " but x has dtype ", dt);
  check_device(op, "z", z, "x", x);
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, op, ": alpha must lie in [0, 1), got ", alpha);
  TORCH_CHECK_VALUE(!batch.has_value() || x.dim() >= 1, op,
                    ": a batch vector needs x with rows (x.dim() >= 1)");
  check_samples(op, batch, num_samples, x.dim() ? x.size(0) : 1, "row", x);
  check_frozen(op, frozen, num_samples, x);
}

// The same, and out: shaped like x, contiguous, memory of its own or x/z exactly, never
// needing a gradient.
void check_picard_update_out_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                                  const c10::optional<at::Tensor>& batch, int64_t num_samples,
                                  const c10::optional<at::Tensor>& frozen, const at::Tensor& out) {
  const char* op = "picard_update";
  check_picard_update_args(x, z, alpha, batch, num_samples, frozen);
  TORCH_CHECK_VALUE(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
                        out.device() == x.device(),
                    op, ": out must match x (shape ", x.sizes(), ", dtype ", x.scalar_type(),
                    ", device ", x.device(), "), got shape ", out.sizes(), ", dtype ",
                    out.scalar_type(), ", device ", out.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), op, ": out must be contiguous");
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (x.requires_grad() || z.requires_grad() || out.requires_grad())),
              op, ": out= writes in place and is not differentiable; call it under "
              "torch.no_grad() or drop out=");
  check_no_overlap(op, out, "x", x, /*allow_same=*/true);
  check_no_overlap(op, out, "z", z, /*allow_same=*/true);
  if (batch.has_value()) check_no_overlap(op, out, "batch", *batch, false);
  if (frozen.has_value()) check_no_overlap(op, out, "frozen", *frozen, false);
}

Out3 picard_update(const at::Tensor& x, const at::Tensor& z, double alpha, const OptTensor& batch,
                   int64_t num_samples, const OptTensor& frozen, bool return_norm) {
  check_picard_update_args(x, z, alpha, batch, num_samples, frozen);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_picard_update", "")
                       .typed<Out3(const at::Tensor&, const at::Tensor&, double, const OptTensor&,
                                   int64_t, const OptTensor&, bool)>();
  return op.call(x, z, alpha, batch, num_samples, frozen, return_norm);
}

Out2 picard_update_out(const at::Tensor& x, const at::Tensor& z, double alpha,
                       const OptTensor& batch, int64_t num_samples, const OptTensor& frozen,
                       bool return_norm, at::Tensor& out) {
  check_picard_update_out_args(x, z, alpha, batch, num_samples, frozen, out);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_picard_update_out", "")
                       .typed<Out2(const at::Tensor&, const at::Tensor&, double, const OptTensor&,
                                   int64_t, const OptTensor&, bool, at::Tensor&)>();
  return op.call(x, z, alpha, batch, num_samples, frozen, return_norm, out);
}

void picard_update_check(const at::Tensor& x, const at::Tensor& z, double alpha,
                         const OptTensor& batch, int64_t num_samples, const OptTensor& frozen,
                         bool return_norm) {
  check_picard_update_args(x, z, alpha, batch, num_samples, frozen);
}

void picard_update_out_check(const at::Tensor& x, const at::Tensor& z, double alpha,
                             const OptTensor& batch, int64_t num_samples,
                             const OptTensor& frozen, bool return_norm, const at::Tensor& out) {
  check_picard_update_out_args(x, z, alpha, batch, num_samples, frozen, out);
}

}  // namespace

#define ARGS                                                                              \
  "(Tensor x, Tensor z, float alpha, Tensor? batch=None, int num_samples=1, Tensor? frozen=None, " \
  "bool return_norm=False)"
#define OUT_ARGS                                                                          \
  "(Tensor x, Tensor z, float alpha, Tensor? batch, int num_samples, Tensor? frozen, "   \
  "bool return_norm, Tensor(a!) out)"

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // x_new = alpha*x + (1-alpha)*z; returns (x_new, res [S], norm [S or 0]).
  m.def("picard_update" ARGS " -> (Tensor, Tensor, Tensor)");
  m.def("_picard_update" ARGS " -> (Tensor, Tensor, Tensor)");
  m.def("picard_update_check" ARGS " -> ()");
  // Same, writing x_new into `out` (which may be x or z itself); returns (res, norm).
  m.def("picard_update_out" OUT_ARGS " -> (Tensor, Tensor)");
  m.def("_picard_update_out" OUT_ARGS " -> (Tensor, Tensor)");
  m.def("picard_update_out_check(Tensor x, Tensor z, float alpha, Tensor? batch, "
        "int num_samples, Tensor? frozen, bool return_norm, Tensor out) -> ()");
}
#undef ARGS
#undef OUT_ARGS

TORCH_LIBRARY_IMPL(fastpicard, CompositeImplicitAutograd, m) {
  m.impl("picard_update", &picard_update);
  m.impl("picard_update_out", &picard_update_out);
  m.impl("picard_update_check", &picard_update_check);
  m.impl("picard_update_out_check", &picard_update_out_check);
}

}  // namespace fastpicard
