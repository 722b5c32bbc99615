// CPU kernels of spmm and spmm_backward (row-parallel, see graph_impl.h). Arguments were
// checked by the public ops (spmm.cpp) except the index values, checked here before any write.
#include <torch/library.h>

#include "common.h"
#include "cpu/graph_isa.h"
#include "spmm.h"

namespace fastpicard {
namespace {

using graph_cpu::Csr;
using graph_cpu::make_csr;

std::tuple<at::Tensor, at::Tensor> spmm_cpu(const at::Tensor& rowptr, const at::Tensor& col,
                                            const c10::optional<at::Tensor>& weight,
                                            const at::Tensor& t_rowptr, const at::Tensor& t_col,
                                            const at::Tensor& t_perm,
                                            const c10::optional<at::Tensor>& t_weight,
                                            const at::Tensor& h_in,
                                            c10::string_view reduce) {
  const Reduce r = parse_reduce(reduce);
  const int64_t n = h_in.size(0), f = h_in.size(1);
  const Csr a = make_csr(rowptr, col, weight, at::Tensor(), n);
  graph_cpu::check_csr_values(a, n, "spmm");
  const at::Tensor h = h_in.contiguous();
  at::Tensor out = empty_output({n, f}, h.options());
  at::Tensor arg;
  if (r == Reduce::kMax) {
    arg = empty_output({n, f}, col.options());
    graph_cpu::kernels().max({a, h, out, arg});
  } else {
    arg = at::empty({0}, col.options());
    graph_cpu::kernels().gather({a, h, out, at::Tensor(), r == Reduce::kMean});
  }
  return {out, arg};
}

std::tuple<at::Tensor, at::Tensor> spmm_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rowptr, const at::Tensor& col,
    const c10::optional<at::Tensor>& weight, const at::Tensor& t_rowptr, const at::Tensor& t_col,
    const at::Tensor& t_perm, const c10::optional<at::Tensor>& t_weight,
    const c10::optional<at::Tensor>& h, const at::Tensor& arg_in,
    c10::string_view reduce, bool need_h, bool need_weight) {
  const Reduce r = parse_reduce(reduce);
  const int64_t n = grad.size(0), f = grad.size(1), e = col.size(0);
  const auto acc = stat_dtype(grad.scalar_type());
  at::Tensor arg;
  if (r == Reduce::kMax) arg = arg_in.contiguous();
  // d loss / d (weighted sum of row i), in the accumulation dtype
  at::Tensor ga = grad.to(acc).contiguous();
  if (r == Reduce::kMean) {
    const at::Tensor deg = (rowptr.slice(0, 1) - rowptr.slice(0, 0, n)).clamp_min(1).to(acc);
    ga = ga / deg.unsqueeze(1);
  }
  at::Tensor gh = at::empty({0}, grad.options()), gw = at::empty({0}, grad.options().dtype(acc));
  if (need_h) {
    const Csr t = graph_cpu::transposed_csr(t_rowptr, t_col, weight, t_perm, t_weight, n,
                                            r == Reduce::kMax);
    graph_cpu::check_csr_values(t, n, "spmm_backward (transposed graph)");
    gh = empty_output({n, f}, grad.options());
    graph_cpu::kernels().gather({t, ga, gh, arg, false});
  }
  if (need_weight) {
    const Csr a = make_csr(rowptr, col, weight, at::Tensor(), n);
    graph_cpu::check_csr_values(a, n, "spmm_backward");
    gw = at::empty({e}, grad.options().dtype(acc));
    graph_cpu::kernels().edge_dot({a, ga, h->contiguous(), arg, gw});
  }
  return {gh, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) {
  m.impl("_spmm", &spmm_cpu);
  m.impl("_spmm_backward", &spmm_backward_cpu);
}

}  // namespace fastpicard
