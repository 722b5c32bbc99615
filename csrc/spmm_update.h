// fastpicard::spmm_update — one fused GNN Picard step over a CSR graph:
//   z = dropout(act(A.h + bias)), x_new = alpha*x + (1-alpha)*z, res = ||x_new - x|| per sample.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include "cpu/graph_isa.h"

namespace fastpicard {

graph_cpu::Act parse_act(c10::string_view act);

}  // namespace fastpicard
