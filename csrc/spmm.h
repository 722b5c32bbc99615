// fastpicard::spmm — sparse aggregation over a CSR graph (sum / mean / max), and the graph
// argument checks shared with fastpicard::spmm_update.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

namespace fastpicard {

enum class Reduce : int { kSum = 0, kMean = 1, kMax = 2 };

Reduce parse_reduce(c10::string_view reduce);

// Shapes, dtypes and devices of the graph tensors of an op: the CSR of the normalised
// adjacency (rowptr [N+1], col [E], weight [E] or None) and its transpose (t_rowptr [N+1],
// t_col [E], t_perm [E]: entry k of the transpose is edge t_perm[k] of the CSR), for node
// features h [N, F] (named `h_name` in messages); t_weight (optional) = weight[t_perm], the
// weights in transposed order, which spares the backward an indirect load per entry. Index
// values are checked by each kernel, before it writes anything.
void check_graph_args(const char* op, const at::Tensor& rowptr, const at::Tensor& col,
                      const c10::optional<at::Tensor>& weight, const at::Tensor& t_rowptr,
                      const at::Tensor& t_col, const at::Tensor& t_perm,
                      const c10::optional<at::Tensor>& t_weight, const at::Tensor& h,
                      const char* h_name = "h");

// An optional tensor shaped, typed and placed like `like` (e.g. h for grad_weight).
void check_like(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                const at::Tensor& like);

}  // namespace fastpicard
