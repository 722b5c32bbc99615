// Instruction-set choice and the shared helpers of the graph CPU kernels.
#include "cpu/graph_isa.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace fastpicard {
namespace graph_cpu {

const Kernels& kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                               __builtin_cpu_supports("f16c");
  const char* want = std::getenv("FASTPICARD_CPU_ISA");
  if (has_avx2 && !(want != nullptr && std::strcmp(want, "base") == 0)) return kernels_avx2();
#endif
  return kernels_base();
}

Dropout dropout_params(double p, const c10::optional<at::Tensor>& seed, const char* op) {
  Dropout d;
  if (p <= 0.0) return d;
  // seed: int64 [2] on the CPU, checked by the op (spmm_update.cpp); its values are ours
  const at::Tensor s = seed->contiguous();
  const int64_t* v = s.const_data_ptr<int64_t>();
  for (int i = 0; i < 2; ++i)
    TORCH_CHECK_VALUE(v[i] >= 0 && v[i] < (int64_t(1) << 31), op,
                      ": seed values must lie in [0, 2^31), got ", v[i]);
  d.on = true;
  d.key = mix32(mix32(static_cast<uint32_t>(v[0])) ^ static_cast<uint32_t>(v[1]));
  d.threshold = static_cast<uint32_t>(std::floor(p * 16777216.0 + 0.5));  // p * 2^24, rounded
  d.scale = 1.0 / (1.0 - p);
  return d;
}

Csr make_csr(const at::Tensor& rowptr, const at::Tensor& col,
             const c10::optional<at::Tensor>& weight, const at::Tensor& perm, int64_t rows) {
  Csr a;
  a.rowptr = rowptr.contiguous();
  a.col = col.contiguous();
  if (weight.has_value()) a.weight = weight->contiguous();
  if (perm.defined()) a.perm = perm.contiguous();
  a.rows = rows;
  return a;
}

Csr transposed_csr(const at::Tensor& t_rowptr, const at::Tensor& t_col,
                   const c10::optional<at::Tensor>& weight, const at::Tensor& t_perm,
                   const c10::optional<at::Tensor>& t_weight, int64_t rows, bool keep_perm) {
  if (keep_perm || !t_weight.has_value()) {
    return make_csr(t_rowptr, t_col, weight, weight.has_value() || keep_perm ? t_perm
                                                                             : at::Tensor(),
                    rows);
  }
  return make_csr(t_rowptr, t_col, t_weight, at::Tensor(), rows);
}

namespace {

template <typename I>
void check_csr_typed(const Csr& a, int64_t src_rows, const char* what) {
  const int64_t rows = a.rows, nnz = a.col.numel();
  const I* rp = a.rowptr.const_data_ptr<I>();
  TORCH_CHECK_INDEX(rp[0] == 0 && static_cast<int64_t>(rp[rows]) == nnz, what,
                    ": rowptr must start at 0 and end at the number of entries (", nnz,
                    "), got ", static_cast<int64_t>(rp[0]), " and ",
                    static_cast<int64_t>(rp[rows]));
  std::atomic<int64_t> bad_row{-1}, bad_col{-1}, bad_perm{-1};
  at::parallel_for(0, rows, kSerialElements, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      if (rp[i] > rp[i + 1]) {
        int64_t e = -1;
        bad_row.compare_exchange_strong(e, i);
        return;
      }
    }
  });
  const int64_t r = bad_row.load();
  TORCH_CHECK_INDEX(r < 0, what, ": rowptr decreases at row ", r);
  const I* col = a.col.const_data_ptr<I>();
  const I* perm = a.perm.defined() ? a.perm.const_data_ptr<I>() : nullptr;
  at::parallel_for(0, nnz, kSerialElements, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      if (col[k] < 0 || col[k] >= src_rows) {
        int64_t e = -1;
        bad_col.compare_exchange_strong(e, k);
        return;
      }
      if (perm != nullptr && (perm[k] < 0 || perm[k] >= nnz)) {
        int64_t e = -1;
        bad_perm.compare_exchange_strong(e, k);
        return;
      }
    }
  });
  const int64_t c = bad_col.load();
  TORCH_CHECK_INDEX(c < 0, what, ": col contains ", static_cast<int64_t>(col[c < 0 ? 0 : c]),
                    " at position ", c, ", outside [0, num_nodes=", src_rows, ")");
  const int64_t q = bad_perm.load();
  TORCH_CHECK_INDEX(q < 0, what, ": perm contains ", perm ? static_cast<int64_t>(perm[q < 0 ? 0 : q]) : 0,
                    " at position ", q, ", outside [0, num_edges=", nnz, ")");
}

template <typename I>
std::vector<int64_t> balanced_rows_typed(const I* rp, int64_t rows, int64_t width) {
  const int64_t nnz = rp[rows];
  const int64_t threads = at::get_num_threads();
  const int64_t work = (nnz + 2 * rows) * std::max<int64_t>(width, 1);
  // a few chunks per thread: common.h's parallel_chunks hands them out dynamically, so a
  // descheduled thread's share is taken over by the others
  const int64_t n = rows == 0 ? 1 : std::min<int64_t>(rows, work < kSerialElements ? 1 : 4 * threads);
  std::vector<int64_t> bounds(n + 1, rows);
  bounds[0] = 0;
  // cost(i) = entries before row i + 2 per row (the epilogue); split into n equal parts
  const int64_t total = nnz + 2 * rows;
  for (int64_t c = 1; c < n; ++c) {
    const int64_t target = total * c / n;
    int64_t lo = bounds[c - 1], hi = rows;
    while (lo < hi) {  // first row whose cost reaches target
      const int64_t mid = lo + (hi - lo) / 2;
      if (static_cast<int64_t>(rp[mid]) + 2 * mid < target) lo = mid + 1;
      else hi = mid;
    }
    bounds[c] = lo;
  }
  return bounds;
}

}  // namespace

void check_csr_values(const Csr& a, int64_t src_rows, const char* what) {
  if (a.col.scalar_type() == at::kInt) {
    check_csr_typed<int32_t>(a, src_rows, what);
  } else {
    check_csr_typed<int64_t>(a, src_rows, what);
  }
}

std::vector<int64_t> balanced_rows(const at::Tensor& rowptr, int64_t rows, int64_t width) {
  if (rowptr.scalar_type() == at::kInt) {
    return balanced_rows_typed(rowptr.const_data_ptr<int32_t>(), rows, width);
  }
  return balanced_rows_typed(rowptr.const_data_ptr<int64_t>(), rows, width);
}

}  // namespace graph_cpu
}  // namespace fastpicard
