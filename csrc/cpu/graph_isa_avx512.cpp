// Graph kernels compiled for AVX-512 (F, VL, BW, DQ; chosen at run time when the CPU has them).
#include "cpu/graph_impl_deps.h"

#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#define FASTPICARD_ISA avx512
#define FASTPICARD_ISA_NAME "avx512"
#define FASTPICARD_VBYTES 64
#include "cpu/graph_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif

namespace fastpicard {
namespace graph_cpu {
const Kernels& kernels_avx512() { return avx512::table(); }
}  // namespace graph_cpu
}  // namespace fastpicard
#endif
