// fastpicard::spmm_update — one fused GNN Picard step over a CSR graph:
//   z = dropout(act(A.h + bias)), x_new = alpha*x + (1-alpha)*z, res = ||x_new - x|| per sample.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include "cpu/graph_isa.h"

namespace fastpicard {

graph_cpu::Act parse_act(c10::string_view act);

// Checks of the non-graph arguments of spmm_update; messages name the Python argument.
void check_spmm_update_args(const at::Tensor& h, const at::Tensor& x, double alpha,
                            const c10::optional<at::Tensor>& bias, c10::string_view act,
                            double negative_slope, double dropout,
                            const c10::optional<at::Tensor>& seed,
                            const c10::optional<at::Tensor>& batch, int64_t num_samples,
                            const c10::optional<at::Tensor>& frozen);

}  // namespace fastpicard
