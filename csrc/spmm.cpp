// Schemas of the spmm ops and the graph argument checks shared by the graph ops.
#include "spmm.h"

#include <torch/library.h>

#include "common.h"

namespace fastpicard {

Reduce parse_reduce(c10::string_view reduce) {
  if (reduce == "sum") return Reduce::kSum;
  if (reduce == "mean") return Reduce::kMean;
  if (reduce == "max") return Reduce::kMax;
  TORCH_CHECK_VALUE(false, "spmm: reduce must be 'sum', 'mean' or 'max', got '", reduce, "'");
}

void check_graph_args(const char* op, const at::Tensor& rowptr, const at::Tensor& col,
                      const c10::optional<at::Tensor>& weight, const at::Tensor& t_rowptr,
                      const at::Tensor& t_col, const at::Tensor& t_perm,
                      const c10::optional<at::Tensor>& t_weight, const at::Tensor& h) {
  const auto dt = h.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   op, ": h must be float32/float16/bfloat16/float64, got ", dt);
  TORCH_CHECK_VALUE(h.dim() == 2, op, ": h must be 2-D [num_nodes, features], got shape ",
                    h.sizes());
  const int64_t n = h.size(0);
  const auto idx = col.scalar_type();
  TORCH_CHECK_TYPE(idx == at::kInt || idx == at::kLong, op, ": col must be int32 or int64, got ",
                   idx);
  const std::pair<const char*, const at::Tensor*> index_args[] = {
      {"rowptr", &rowptr}, {"col", &col}, {"t_rowptr", &t_rowptr}, {"t_col", &t_col},
      {"t_perm", &t_perm}};
  for (const auto& [name, t] : index_args) {
    TORCH_CHECK_TYPE(t->scalar_type() == idx, op, ": ", name, " has dtype ", t->scalar_type(),
                     " but col has dtype ", idx, " (all graph indices share one dtype)");
    TORCH_CHECK_VALUE(t->dim() == 1, op, ": ", name, " must be 1-D, got shape ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == h.device(), op, ": ", name, " is on ", t->device(),
                      " but h is on ", h.device());
  }
  const int64_t e = col.size(0);
  TORCH_CHECK_VALUE(rowptr.size(0) == n + 1, op, ": rowptr must have num_nodes+1=", n + 1,
                    " entries (h has ", n, " rows), got ", rowptr.size(0));
  TORCH_CHECK_VALUE(t_rowptr.size(0) == n + 1, op, ": t_rowptr must have num_nodes+1=", n + 1,
                    " entries, got ", t_rowptr.size(0));
  TORCH_CHECK_VALUE(t_col.size(0) == e && t_perm.size(0) == e, op,
                    ": t_col and t_perm must have one entry per edge (", e, "), got ",
                    t_col.size(0), " and ", t_perm.size(0));
  TORCH_CHECK_VALUE(weight.has_value() || !t_weight.has_value(), op,
                    ": t_weight is given without weight");
  const std::pair<const char*, const c10::optional<at::Tensor>*> weight_args[] = {
      {"weight", &weight}, {"t_weight", &t_weight}};
  for (const auto& [name, opt] : weight_args) {
    if (!opt->has_value()) continue;
    const auto& w = **opt;
    TORCH_CHECK_TYPE(w.scalar_type() == stat_dtype(h.scalar_type()), op, ": ", name,
                     " must be ", stat_dtype(h.scalar_type()), " for ", h.scalar_type(),
                     " features, got ", w.scalar_type());
    TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == e, op, ": ", name,
                      " must have shape [num_edges=", e, "], got ", w.sizes());
    TORCH_CHECK_VALUE(w.device() == h.device(), op, ": ", name, " is on ", w.device(),
                      " but h is on ", h.device());
  }
}

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // out[i] = reduce over edges k of row i of weight[k] * h[col[k]] (sum, mean or max; empty
  // rows give 0). Returns (out [N, F], arg): arg is, for max, the edge attaining each output
  // ([N, F], index dtype, -1 for empty rows), else an empty tensor. The transposed CSR
  // (t_weight = weight[t_perm], or None to read weight through t_perm) is used by the
  // backward only.
  m.def(
      "spmm(Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, Tensor t_col, "
      "Tensor t_perm, Tensor? t_weight, Tensor h, str reduce=\"sum\") -> (Tensor, Tensor)");
  // Gradients of spmm: (grad_h [N, F] or empty, grad_weight [E] or empty). h is needed only
  // for grad_weight.
  m.def(
      "spmm_backward(Tensor grad, Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, "
      "Tensor t_col, Tensor t_perm, Tensor? t_weight, Tensor? h, Tensor arg, str reduce, "
      "bool need_h, bool need_weight) -> (Tensor, Tensor)");
}

}  // namespace fastpicard
