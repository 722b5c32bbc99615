#include "common.h"

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

}  // namespace fastpicard
