// Graph kernels for the baseline instruction set (x86-64: SSE2), the fallback everywhere.
#include "cpu/graph_impl_deps.h"

#if defined(__GNUC__) && !defined(__clang__)
// Floating-point exception flags are never read here; without this GCC keeps comparisons
// such as relu's as branches and leaves those loops scalar.
#pragma GCC optimize("no-trapping-math")
#endif

#define FASTPICARD_ISA base
#define FASTPICARD_ISA_NAME "base"
#define FASTPICARD_VBYTES 16
#include "cpu/graph_impl.h"

namespace fastpicard {
namespace graph_cpu {
const Kernels& kernels_base() { return base::table(); }
}  // namespace graph_cpu
}  // namespace fastpicard
