// Graph kernels for the baseline instruction set (x86-64: SSE2), the fallback everywhere.
#include "cpu/graph_impl_deps.h"

#define FASTPICARD_ISA base
#define FASTPICARD_ISA_NAME "base"
#define FASTPICARD_VBYTES 16
#include "cpu/graph_impl.h"

namespace fastpicard {
namespace graph_cpu {
const Kernels& kernels_base() { return base::table(); }
}  // namespace graph_cpu
}  // namespace fastpicard
