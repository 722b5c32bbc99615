// CPU kernels of the graph ops (spmm, spmm_update), compiled once per instruction set.
//
// graph_impl.h holds the kernels as templates; graph_isa_<isa>.cpp compiles them for one ISA
// (baseline, AVX2+FMA+F16C) and fills a table of entry points; kernels() picks the best one this
// CPU runs. (An AVX-512 build measured no faster: the gathers are bound by cache and memory
// latency, not by arithmetic.) Everything below takes validated, contiguous tensors: argument
// and index checks happen in the op files before any kernel runs.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace fastpicard {
namespace graph_cpu {

enum class Act : int { kIdentity = 0, kRelu = 1, kLeakyRelu = 2, kTanh = 3 };

// The dropout hash: a 32-bit integer mixer (xorshift-multiply rounds). The Triton kernels and
// the pure-torch reference implement the same function bit for bit, so every backend keeps
// the same elements for the same seed.
inline uint32_t mix32(uint32_t v) {
  v ^= v >> 16;
  v *= 0x7feb352dU;
  v ^= v >> 15;
  v *= 0x5bd1e995U;
  v ^= v >> 16;
  return v;
}

// In-kernel dropout (see dropout_key() in graph_isa.cpp): element (row, f) is kept when
// mix(mix(row ^ key) ^ f) >> 8 >= threshold, and kept values are multiplied by scale.
struct Dropout {
  bool on = false;
  uint32_t key = 0;
  uint32_t threshold = 0;
  double scale = 1.0;
};

// Rows of a sparse matrix in CSR form. Entry k of row r reads source row col[k] with weight
// weight[k], or weight[perm[k]] when perm is defined (the transposed CSR reads the weights of
// the original edges), or 1 when weight is undefined.
struct Csr {
  at::Tensor rowptr, col, weight, perm;
  int64_t rows = 0;
};

// spmm_update forward: per row, z = dropout(act(A.h + bias)), out = alpha*x + (1-alpha)*z
// (x for frozen rows); y = act(A.h + bias) when defined; row_res/row_norm [rows] receive the
// per-row sums of (out - x)^2 and out^2 (acc dtype; row_norm may be undefined).
struct UpdateForward {
  Csr a;
  at::Tensor h, x, bias, out, y, row_res, row_norm;
  double alpha = 0.0;
  Act act = Act::kRelu;
  double slope = 0.01;
  Dropout drop;
  const int64_t* batch = nullptr;  // sample id per row (nullptr: one sample)
  const bool* frozen = nullptr;    // per sample (nullptr: none frozen)
};

// spmm_update backward, row pass: gp = d loss / d (A.h + bias) in acc dtype, and
// gx = d loss / d x in the data dtype (when defined).
struct UpdateBackwardRows {
  at::Tensor grad, y, gp, gx;
  double alpha = 0.0;
  Act act = Act::kRelu;
  double slope = 0.01;
  Dropout drop;
  const int64_t* batch = nullptr;
  const bool* frozen = nullptr;
};

// out[r] = scale_r * sum_k w_k * src[col[k]] (scale_r = 1/degree when mean, else 1). When
// arg is defined (backward of max), entry k contributes to feature f only where
// arg[col[k], f] == perm[k]. src is the data dtype or the acc dtype; out is the data dtype.
struct Gather {
  Csr a;
  at::Tensor src, out, arg;
  bool mean = false;
};

// gw[k] = sum_f g[r, f] * h[col[k], f] for entry k of row r (only features f with
// arg[r, f] == k when arg is defined). g and gw are acc dtype, h is the data dtype.
struct EdgeDot {
  Csr a;
  at::Tensor g, h, arg, gw;
};

// out[r, f] = max_k w_k * h[col[k], f] and arg[r, f] = the first k attaining it (NaN wins);
// rows without entries get 0 and arg -1.
struct Max {
  Csr a;
  at::Tensor h, out, arg;
};

// out[f] = sum_r src[r, f] (acc dtype), summed in fixed row blocks: independent of threads.
struct ColumnSum {
  at::Tensor src, out;
};

struct Kernels {
  const char* name;
  void (*update_forward)(const UpdateForward&);
  void (*update_backward_rows)(const UpdateBackwardRows&);
  void (*gather)(const Gather&);
  void (*edge_dot)(const EdgeDot&);
  void (*max)(const Max&);
  void (*column_sum)(const ColumnSum&);
};

// The kernels for this CPU: AVX2+FMA+F16C when supported, else baseline. The environment variable
// FASTPICARD_CPU_ISA=base forces the baseline (read on every call; for tests and benchmarks).
const Kernels& kernels();

const Kernels& kernels_base();
#if defined(__x86_64__) && defined(__GNUC__)
const Kernels& kernels_avx2();
#endif

// Dropout parameters of one call: key from the two int64 words of `seed` (each in [0, 2^31),
// checked here; errors name `op`).
Dropout dropout_params(double p, const c10::optional<at::Tensor>& seed, const char* op);

// A Csr of contiguous tensors (perm may be undefined).
Csr make_csr(const at::Tensor& rowptr, const at::Tensor& col,
             const c10::optional<at::Tensor>& weight, const at::Tensor& perm, int64_t rows);

// The transposed CSR for a backward gather: weights from t_weight when given (direct loads),
// else weight read through t_perm. keep_perm: also keep t_perm (max needs the edge ids).
Csr transposed_csr(const at::Tensor& t_rowptr, const at::Tensor& t_col,
                   const c10::optional<at::Tensor>& weight, const at::Tensor& t_perm,
                   const c10::optional<at::Tensor>& t_weight, int64_t rows, bool keep_perm);

// Index checks of a CSR against its source rows (rowptr starts at 0, never decreases, ends at
// nnz; col in [0, src_rows); perm in [0, nnz)). IndexError naming `what` otherwise.
void check_csr_values(const Csr& a, int64_t src_rows, const char* what);

// Row ranges of about equal cost (entries + 2 per row), a few per thread (for
// parallel_chunks); one range when the work is small.
std::vector<int64_t> balanced_rows(const at::Tensor& rowptr, int64_t rows, int64_t width);

}  // namespace graph_cpu
}  // namespace fastpicard
