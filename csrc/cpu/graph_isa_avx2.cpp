// Graph kernels compiled for AVX2 + FMA + F16C (chosen at run time when the CPU has them).
#include "cpu/graph_impl_deps.h"

#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#pragma GCC optimize("no-trapping-math")  // see graph_isa_base.cpp
#endif
#define FASTPICARD_ISA avx2
#define FASTPICARD_ISA_NAME "avx2"
#define FASTPICARD_VBYTES 32
#include "cpu/graph_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif

namespace fastpicard {
namespace graph_cpu {
const Kernels& kernels_avx2() { return avx2::table(); }
}  // namespace graph_cpu
}  // namespace fastpicard
#endif
