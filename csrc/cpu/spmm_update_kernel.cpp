// CPU kernels of spmm_update and spmm_update_backward. Arguments were checked by the public
// ops (spmm_update.cpp) except index values (CSR, batch ids, the dropout seed), checked here
// before any write.
//
// Forward: one pass over the CSR rows (graph_impl.h) writes x_new (and act_out when the
// backward needs it) and per-row squared sums; rows fold into per-sample residuals in row
// order, so results do not depend on the thread count.
// Backward: a row pass gives gp = d loss / d (A.h + bias) (dropout mask regenerated from the
// seed), then grad_h = A^T gp over the transposed CSR (each output row written by one
// thread: no atomics), grad_weight[k] = <gp[row k], h[col k]>, grad_bias = column sums of gp.
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common.h"
#include "cpu/graph_isa.h"
#include "spmm.h"
#include "spmm_update.h"

namespace fastpicard {
namespace {

using graph_cpu::Csr;
using graph_cpu::make_csr;

c10::optional<at::Tensor> contiguous_opt(const c10::optional<at::Tensor>& t) {
  if (!t.has_value()) return c10::nullopt;
  return t->contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spmm_update_cpu(
    const at::Tensor& rowptr, const at::Tensor& col, const c10::optional<at::Tensor>& weight,
    const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
    const c10::optional<at::Tensor>& t_weight, const at::Tensor& h_in, const at::Tensor& x_in,
    double alpha,
    const c10::optional<at::Tensor>& bias, c10::string_view act, double negative_slope,
    double dropout, const c10::optional<at::Tensor>& seed,
    const c10::optional<at::Tensor>& batch_in, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen_in, bool return_norm, bool save_act) {
  const int64_t n = h_in.size(0), f = h_in.size(1);
  const Csr a = make_csr(rowptr, col, weight, at::Tensor(), n);
  graph_cpu::check_csr_values(a, n, "spmm_update");
  const c10::optional<at::Tensor> batch = contiguous_opt(batch_in);
  const c10::optional<at::Tensor> frozen = contiguous_opt(frozen_in);
  if (batch.has_value()) check_batch_ids(*batch, num_samples, "spmm_update: batch");

  const auto acc = stat_dtype(h_in.scalar_type());
  graph_cpu::UpdateForward p;
  p.a = a;
  p.h = h_in.contiguous();
  p.x = x_in.contiguous();
  if (bias.has_value()) p.bias = bias->contiguous();
  p.out = empty_output({n, f}, h_in.options());
  if (save_act) p.y = empty_output({n, f}, h_in.options());
  p.row_res = at::empty({n}, h_in.options().dtype(acc));
  if (return_norm) p.row_norm = at::empty({n}, h_in.options().dtype(acc));
  p.alpha = alpha;
  p.act = parse_act(act);
  p.slope = negative_slope;
  p.drop = graph_cpu::dropout_params(dropout, seed, "spmm_update");
  p.batch = batch.has_value() ? batch->const_data_ptr<int64_t>() : nullptr;
  p.frozen = frozen.has_value() ? frozen->const_data_ptr<bool>() : nullptr;
  graph_cpu::kernels().update_forward(p);

  // rows fold into samples in row order (double sums): no atomics, thread-count independent
  std::vector<double> res_sq(num_samples, 0.0), norm_sq(return_norm ? num_samples : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES(acc, "spmm_update_fold", [&] {
    const scalar_t* rr = p.row_res.const_data_ptr<scalar_t>();
    const scalar_t* rn = return_norm ? p.row_norm.const_data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = p.batch ? p.batch[i] : 0;
      res_sq[s] += rr[i];
      if (rn) norm_sq[s] += rn[i];
    }
  });
  at::Tensor res = at::empty({num_samples}, h_in.options().dtype(acc));
  at::Tensor norm = at::empty({return_norm ? num_samples : 0}, h_in.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES(acc, "spmm_update_stats", [&] {
    scalar_t* rp = res.data_ptr<scalar_t>();
    scalar_t* np = return_norm ? norm.data_ptr<scalar_t>() : nullptr;
    for (int64_t s = 0; s < num_samples; ++s) {
      rp[s] = static_cast<scalar_t>(std::sqrt(res_sq[s]));
      if (np) np[s] = static_cast<scalar_t>(std::sqrt(norm_sq[s]));
    }
  });
  at::Tensor y = save_act ? p.y : at::empty({0}, h_in.options());
  return {p.out, res, norm, y};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> spmm_update_backward_cpu(
    const at::Tensor& grad_in, const c10::optional<at::Tensor>& act_out,
    const at::Tensor& rowptr, const at::Tensor& col, const c10::optional<at::Tensor>& weight,
    const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
    const c10::optional<at::Tensor>& t_weight, const c10::optional<at::Tensor>& h, double alpha,
    c10::string_view act,
    double negative_slope, double dropout, const c10::optional<at::Tensor>& seed,
    const c10::optional<at::Tensor>& batch_in, const c10::optional<at::Tensor>& frozen_in,
    bool need_h, bool need_x, bool need_weight, bool need_bias) {
  const char* op = "spmm_update_backward";
  const int64_t num_samples = frozen_in.has_value() ? frozen_in->size(0) : 1;
  const graph_cpu::Act a = parse_act(act);
  const int64_t n = grad_in.size(0), f = grad_in.size(1), e = col.size(0);
  const c10::optional<at::Tensor> batch = contiguous_opt(batch_in);
  const c10::optional<at::Tensor> frozen = contiguous_opt(frozen_in);
  if (batch.has_value() && frozen.has_value()) check_batch_ids(*batch, num_samples, "spmm_update_backward: batch");
  const auto acc = stat_dtype(grad_in.scalar_type());
  const auto opts = grad_in.options();

  graph_cpu::UpdateBackwardRows p;
  p.grad = grad_in.contiguous();
  if (act_out.has_value() && a != graph_cpu::Act::kIdentity) p.y = act_out->contiguous();
  p.gp = empty_output({n, f}, opts.dtype(acc));
  if (need_x) p.gx = empty_output({n, f}, opts);
  p.alpha = alpha;
  p.act = a;
  p.slope = negative_slope;
  p.drop = graph_cpu::dropout_params(dropout, seed, op);
  p.batch = batch.has_value() ? batch->const_data_ptr<int64_t>() : nullptr;
  p.frozen = frozen.has_value() ? frozen->const_data_ptr<bool>() : nullptr;
  graph_cpu::kernels().update_backward_rows(p);

  at::Tensor gh = at::empty({0}, opts), gx = need_x ? p.gx : at::empty({0}, opts);
  at::Tensor gw = at::empty({0}, opts.dtype(acc)), gb = at::empty({0}, opts);
  if (need_h) {
    const Csr t = graph_cpu::transposed_csr(t_rowptr, t_col, weight, t_perm, t_weight, n, false);
    graph_cpu::check_csr_values(t, n, "spmm_update_backward (transposed graph)");
    gh = empty_output({n, f}, opts);
    graph_cpu::kernels().gather({t, p.gp, gh, at::Tensor(), false});
  }
  if (need_weight) {
    const Csr c = make_csr(rowptr, col, weight, at::Tensor(), n);
    graph_cpu::check_csr_values(c, n, op);
    gw = at::empty({e}, opts.dtype(acc));
    graph_cpu::kernels().edge_dot({c, p.gp, h->contiguous(), at::Tensor(), gw});
  }
  if (need_bias) {
    at::Tensor sum = at::empty({f}, opts.dtype(acc));
    graph_cpu::kernels().column_sum({p.gp, sum});
    gb = sum.to(grad_in.scalar_type());
  }
  return {gh, gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) {
  m.impl("_spmm_update", &spmm_update_cpu);
  m.impl("_spmm_update_backward", &spmm_update_backward_cpu);
}

}  // namespace fastpicard
