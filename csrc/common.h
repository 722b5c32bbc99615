// Small helpers shared by the ops' argument checks and the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

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

// Hot CPU loops are compiled twice, for baseline x86-64 and x86-64-v3 (AVX2, FMA, F16C), and
// the loader picks the clone the CPU supports (GCC function multiversioning). Inline helpers
// called from a cloned function are compiled into each clone.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTPICARD_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTPICARD_CPU_CLONES
#endif
// Helpers called from a cloned function must be force-inlined: GCC does not inline a
// baseline-target function into a clone of another -march on its own.
#if defined(__GNUC__)
#define FASTPICARD_INLINE inline __attribute__((always_inline))
#else
#define FASTPICARD_INLINE inline
#endif

// Element I/O that the compiler can vectorise: c10::BFloat16/Half conversions branch on NaN
// and do not vectorise; these are branch-free (bf16: round-to-nearest-even, NaN kept quiet)
// or native (_Float16, which F16C turns into vcvtph2ps/vcvtps2ph).
template <typename T> struct io {
  using raw = T;
  static FASTPICARD_INLINE acc_t<T> load(raw v) { return static_cast<acc_t<T>>(v); }
  static FASTPICARD_INLINE raw store(acc_t<T> v) { return static_cast<raw>(v); }
};
template <> struct io<c10::BFloat16> {
  using raw = uint16_t;
  static FASTPICARD_INLINE float load(raw v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static FASTPICARD_INLINE raw store(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    return static_cast<raw>(f != f ? 0x7FC0u : rounded);
  }
};
#if defined(__FLT16_MAX__)
template <> struct io<c10::Half> {
  using raw = _Float16;
  static FASTPICARD_INLINE float load(raw v) { return static_cast<float>(v); }
  static FASTPICARD_INLINE raw store(float f) { return static_cast<raw>(f); }
};
#endif
template <typename T> inline const typename io<T>::raw* raw_ptr(const T* p) {
  return reinterpret_cast<const typename io<T>::raw*>(p);
}
template <typename T> inline typename io<T>::raw* raw_ptr(T* p) {
  return reinterpret_cast<typename io<T>::raw*>(p);
}

// A fresh contiguous output. Large ones are advised onto transparent huge pages before first
// touch: page faults on a new 40 MB buffer otherwise cost several times the arithmetic.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// Per-sample ids (int64, one per row) must lie in [0, num_samples). Checked before any output
// is written, so an error never leaves an in-place update half done.
void check_batch_ids(const at::Tensor& batch, int64_t num_samples, const char* name);

// ---- argument checks of the ops' validating kernels (csrc/<op>.cpp)

// t must be on ref's device. A meta tensor among real ones is such a mix: the dispatcher
// would send the call to the meta kernel, which returns uninitialised memory.
inline void check_device(const char* op, const char* name, const at::Tensor& t,
                         const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
                    ref_name, " is on ", ref.device());
}

// A per-sample id vector `batch` [rows] (int64, on ref's device) and its sample count: a
// batch of R rows holds at most R samples (every per-sample buffer is [num_samples], so an
// unbounded count is an unbounded allocation); without a batch there is one sample.
void check_samples(const char* op, const c10::optional<at::Tensor>& batch, int64_t num_samples,
                   int64_t rows, const char* row, const at::Tensor& ref);

// frozen (optional bool [num_samples] on ref's device).
void check_frozen(const char* op, const c10::optional<at::Tensor>& frozen, int64_t num_samples,
                  const at::Tensor& ref);

// Whether t has memory whose addresses can be compared (not a meta, fake or functional
// tensor, as seen while torch.compile traces).
bool has_data(const at::Tensor& t);

// `out`, which an op writes, must not share memory with `t`, which it reads (any overlap;
// with allow_same, t may be out itself: element-wise ops read each element before writing).
void check_no_overlap(const char* op, const at::Tensor& out, const char* name,
                      const at::Tensor& t, bool allow_same);

// For backward kernels that are first-order only (their outputs have no graph of their own):
// a create_graph=True backward would silently drop every second-order term, so refuse it.
inline void check_first_order_backward(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "fastpicard.", op,
              ": its compiled backward is first-order only, but this backward was asked to "
              "build a graph (create_graph=True). Run the forward inside `with "
              "fastpicard.higher_order_grads():` (pure-torch kernels, differentiable to any "
              "order), or pass backend='reference'.");
}

// Residual / norm outputs: float32, or float64 when the data is float64.
inline at::ScalarType stat_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastpicard
