#include "common.h"

#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <atomic>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastpicard {

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options.memory_format(at::MemoryFormat::Contiguous));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  if (out.device().is_cpu() && out.nbytes() >= 2 * kHuge) {
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(out.data_ptr()) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(out.data_ptr()) + out.nbytes()) & ~(kHuge - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advisory only
  }
#endif
  return out;
}

void check_batch_ids(const at::Tensor& batch, int64_t num_samples, const char* name) {
  const int64_t n = batch.numel();
  if (n == 0) return;
  const int64_t* b = batch.data_ptr<int64_t>();
  std::atomic<int64_t> bad{-1};
  at::parallel_for(0, n, kSerialElements, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      if (b[i] < 0 || b[i] >= num_samples) {
        int64_t expected = -1;
        bad.compare_exchange_strong(expected, i);
        return;
      }
    }
  });
  const int64_t i = bad.load();
  TORCH_CHECK_INDEX(i < 0, name, " contains id ", b[i < 0 ? 0 : i], " at position ", i,
                    ", outside [0, num_samples=", num_samples, ")");
}

void check_samples(const char* op, const c10::optional<at::Tensor>& batch, int64_t num_samples,
                   int64_t rows, const char* row, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(num_samples >= 0, op, ": num_samples must be >= 0, got ", num_samples);
  if (!batch.has_value()) {
    TORCH_CHECK_VALUE(num_samples == 1, op, ": num_samples=", num_samples,
                      " needs a batch vector");
    return;
  }
  const at::Tensor& b = *batch;
  TORCH_CHECK_TYPE(b.scalar_type() == at::kLong, op, ": batch must be int64, got ",
                   b.scalar_type());
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == rows, op, ": batch must have shape [", rows,
                    "] (one id per ", row, "), got ", b.sizes());
  check_device(op, "batch", b, "x", ref);
  TORCH_CHECK_VALUE(num_samples <= rows, op, ": num_samples=", num_samples, " exceeds the "
                    "number of ", row, "s (", rows, "): a batch of R rows holds at most R "
                    "samples (number them 0..num_samples-1)");
}

void check_frozen(const char* op, const c10::optional<at::Tensor>& frozen, int64_t num_samples,
                  const at::Tensor& ref) {
  if (!frozen.has_value()) return;
  const at::Tensor& f = *frozen;
  TORCH_CHECK_TYPE(f.scalar_type() == at::kBool, op, ": frozen must be bool, got ",
                   f.scalar_type());
  TORCH_CHECK_VALUE(f.dim() == 1 && f.size(0) == num_samples, op,
                    ": frozen must have shape [num_samples=", num_samples, "], got ", f.sizes());
  check_device(op, "frozen", f, "x", ref);
}

bool has_data(const at::Tensor& t) {
  return t.has_storage() && t.storage().data() != nullptr;
}

void check_no_overlap(const char* op, const at::Tensor& out, const char* name,
                      const at::Tensor& t, bool allow_same) {
  if (!has_data(out) || !has_data(t)) return;
  const at::MemOverlapStatus s = at::get_overlap_status(out, t);
  // TooHard: t is not dense (a broadcast or strided view); the kernels copy such inputs
  // before they write anything.
  TORCH_CHECK_VALUE(s == at::MemOverlapStatus::No || s == at::MemOverlapStatus::TooHard ||
                        (allow_same && s == at::MemOverlapStatus::Full),
                    op, ": out overlaps ", name,
                    allow_same ? " partly; it may be that tensor itself (in place) or memory of "
                                 "its own"
                               : "; it must be memory of its own");
}

}  // namespace fastpicard
