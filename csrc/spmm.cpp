// Schemas of the spmm ops, their argument checks and the graph argument checks shared by the
// graph ops. As for every op (see picard_update.cpp): the public ops' only kernel checks the
// arguments and calls the internal op (_spmm, _spmm_backward) that holds the CPU, CUDA, fake
// and autograd kernels; spmm_check runs the checks alone (for the pure-torch reference).
#include "spmm.h"

#include <ATen/core/dispatch/Dispatcher.h>
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
                      const c10::optional<at::Tensor>& t_weight, const at::Tensor& h,
                      const char* h_name) {
  const auto dt = h.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   op, ": ", h_name, " must be float32/float16/bfloat16/float64, got ", dt);
  TORCH_CHECK_VALUE(h.dim() == 2, op, ": ", h_name, " must be 2-D [num_nodes, features], got "
                    "shape ", h.sizes());
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
    check_device(op, name, *t, h_name, h);
  }
  const int64_t e = col.size(0);
  TORCH_CHECK_VALUE(rowptr.size(0) == n + 1, op, ": ", h_name, " must have one row per node: "
                    "it has shape ", h.sizes(), ", the graph has ", rowptr.size(0) - 1,
                    " nodes (rowptr has ", rowptr.size(0), " entries)");
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
    TORCH_CHECK_TYPE(w.scalar_type() == stat_dtype(dt), op, ": ", name, " must be ",
                     stat_dtype(dt), " for ", dt, " features, got ", w.scalar_type());
    TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == e, op, ": ", name,
                      " must have shape [num_edges=", e, "], got ", w.sizes());
    check_device(op, name, w, h_name, h);
  }
}

void check_like(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                const at::Tensor& like) {
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), " but ", like_name, " has dtype ", like.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), op, ": ", name, " has shape ", t.sizes(), " but ",
                    like_name, " has shape ", like.sizes());
  check_device(op, name, t, like_name, like);
}

namespace {

using OptTensor = c10::optional<at::Tensor>;
using Out2 = std::tuple<at::Tensor, at::Tensor>;

void check_spmm_args(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
                     const at::Tensor& t_rowptr, const at::Tensor& t_col,
                     const at::Tensor& t_perm, const OptTensor& t_weight, const at::Tensor& h,
                     c10::string_view reduce) {
  check_graph_args("spmm", rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h);
  parse_reduce(reduce);
}

void check_spmm_backward_args(const at::Tensor& grad, const at::Tensor& rowptr,
                              const at::Tensor& col, const OptTensor& weight,
                              const at::Tensor& t_rowptr, const at::Tensor& t_col,
                              const at::Tensor& t_perm, const OptTensor& t_weight,
                              const OptTensor& h, const at::Tensor& arg,
                              c10::string_view reduce, bool need_h, bool need_weight) {
  const char* op = "spmm_backward";
  check_graph_args(op, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, grad, "grad");
  check_device(op, "arg", arg, "grad", grad);
  if (h.has_value()) check_like(op, "h", *h, "grad", grad);
  if (parse_reduce(reduce) == Reduce::kMax) {
    TORCH_CHECK_VALUE(arg.sizes() == grad.sizes() && arg.scalar_type() == col.scalar_type(), op,
                      ": arg must have shape ", grad.sizes(), " and dtype ", col.scalar_type(),
                      " for reduce='max', got ", arg.sizes(), " ", arg.scalar_type());
  }
  TORCH_CHECK_VALUE(!need_weight || (h.has_value() && weight.has_value()), op,
                    ": need_weight needs weight and h");
}

Out2 spmm(const at::Tensor& rowptr, const at::Tensor& col, const OptTensor& weight,
          const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& t_perm,
          const OptTensor& t_weight, const at::Tensor& h, c10::string_view reduce) {
  check_spmm_args(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_spmm", "")
                       .typed<Out2(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const OptTensor&, const at::Tensor&, c10::string_view)>();
  return op.call(rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, reduce);
}

Out2 spmm_backward(const at::Tensor& grad, const at::Tensor& rowptr, const at::Tensor& col,
                   const OptTensor& weight, const at::Tensor& t_rowptr, const at::Tensor& t_col,
                   const at::Tensor& t_perm, const OptTensor& t_weight, const OptTensor& h,
                   const at::Tensor& arg, c10::string_view reduce, bool need_h,
                   bool need_weight) {
  check_spmm_backward_args(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg,
                           reduce, need_h, need_weight);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpicard::_spmm_backward", "")
                       .typed<Out2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const OptTensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const OptTensor&, const OptTensor&,
                                   const at::Tensor&, c10::string_view, bool, bool)>();
  return op.call(grad, rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, h, arg, reduce,
                 need_h, need_weight);
}

}  // namespace

#define ARGS                                                                                   \
  "(Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, Tensor t_col, Tensor t_perm, " \
  "Tensor? t_weight, Tensor h, str reduce=\"sum\")"
#define BACKWARD_ARGS                                                                        \
  "(Tensor grad, Tensor rowptr, Tensor col, Tensor? weight, Tensor t_rowptr, Tensor t_col, " \
  "Tensor t_perm, Tensor? t_weight, Tensor? h, Tensor arg, str reduce, bool need_h, "        \
  "bool need_weight)"

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // out[i] = reduce over edges k of row i of weight[k] * h[col[k]] (sum, mean or max; empty
  // rows give 0). Returns (out [N, F], arg): arg is, for max, the edge attaining each output
  // ([N, F], index dtype, -1 for empty rows), else an empty tensor. The transposed CSR
  // (t_weight = weight[t_perm], or None to read weight through t_perm) is used by the
  // backward only.
  m.def("spmm" ARGS " -> (Tensor, Tensor)");
  m.def("_spmm" ARGS " -> (Tensor, Tensor)");
  m.def("spmm_check" ARGS " -> ()");
  // Gradients of spmm: (grad_h [N, F] or empty, grad_weight [E] or empty). h is needed only
  // for grad_weight.
  m.def("spmm_backward" BACKWARD_ARGS " -> (Tensor, Tensor)");
  m.def("_spmm_backward" BACKWARD_ARGS " -> (Tensor, Tensor)");
}
#undef ARGS
#undef BACKWARD_ARGS

TORCH_LIBRARY_IMPL(fastpicard, CompositeImplicitAutograd, m) {
  m.impl("spmm", &spmm);
  m.impl("spmm_check", &check_spmm_args);
  m.impl("spmm_backward", &spmm_backward);
}

}  // namespace fastpicard
