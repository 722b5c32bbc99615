// Small helpers shared by the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <atomic>

namespace fastpicard {

// Accumulation type: float32 for float/half/bfloat16 (the kernels' contract), double for double.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <typename T> using acc_t = typename acc_type<T>::type;

// Elements below which a kernel stays on the calling thread: a parallel region costs more
// than it saves on small inputs, and under load OpenMP spin-waiting makes it far worse.
constexpr int64_t kSerialElements = 1 << 16;

// Runs f(c) for c in [0, n): on the calling thread when n < 2 or `serial`, else on the ATen
// OpenMP pool, threads pulling chunks from a shared counter. Dynamic claiming keeps a kernel
// fast when a thread is descheduled (a loaded machine, OMP_WAIT_POLICY=PASSIVE): the threads
// that run take its chunks instead of waiting for its static share at the barrier.
template <typename F>
void parallel_chunks(int64_t n, bool serial, const F& f) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (serial || threads < 2) {
    for (int64_t c = 0; c < n; ++c) f(c);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      f(c);
    }
  });
}

// Hot CPU loops are compiled twice, for baseline x86-64 and for AVX2, and the loader picks the
// clone the CPU supports (GCC/Clang function multiversioning). Inline helpers called from a
// cloned function are compiled into each clone.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTPICARD_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTPICARD_CPU_CLONES
#endif

// A fresh contiguous output. Large ones are advised onto transparent huge pages before first
// touch: page faults on a new 40 MB buffer otherwise cost several times the arithmetic.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// Per-sample ids (int64, one per row) must lie in [0, num_samples). Checked before any output
// is written, so an error never leaves an in-place update half done.
void check_batch_ids(const at::Tensor& batch, int64_t num_samples, const char* name);

// Residual / norm outputs: float32, or float64 when the data is float64.
inline at::ScalarType stat_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastpicard
