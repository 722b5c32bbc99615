// CPU kernel of picard_update: x_new = alpha*x + (1-alpha)*z with, in the same pass over
// memory, per-sample sums of (x_new - x)^2 and x_new^2.
//
// Determinism: work is cut into fixed-size chunks (or rows) whose partial sums are combined
// in a fixed order, so results do not depend on the thread count.
#include <torch/library.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <vector>

#include "common.h"

namespace fastpicard {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial sum in the unbatched case

// One contiguous run; out may alias x or z (each element is read before it is written).
template <typename T>
FASTPICARD_INLINE void update_run(const T* xs, const T* zs, T* outs, int64_t n, acc_t<T> alpha,
                       acc_t<T> beta, bool frozen, acc_t<T>& res, acc_t<T>& norm) {
  using acc = acc_t<T>;
  using IO = io<T>;
  const auto* x = raw_ptr(xs);
  const auto* z = raw_ptr(zs);
  auto* out = raw_ptr(outs);
  acc r = 0, s = 0;
  if (frozen) {  // converged sample: passes through unchanged, residual exactly 0
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) {
      const acc xv = IO::load(x[j]);
      out[j] = x[j];
      s += xv * xv;
    }
  } else {
#pragma omp simd reduction(+ : r, s)
    for (int64_t j = 0; j < n; ++j) {
      const acc xv = IO::load(x[j]);
      const acc nv = alpha * xv + beta * IO::load(z[j]);
      out[j] = IO::store(nv);
      const acc d = nv - xv;
      r += d * d;
      s += nv * nv;
    }
  }
  res = r;
  norm = s;
}

// Chunk and row ranges, one overload per dtype so each can be multiversioned.
#define FASTPICARD_RANGES(T)                                                                   \
  FASTPICARD_CPU_CLONES void chunk_range(const T* x, const T* z, T* out, int64_t n,            \
                                         acc_t<T> a, acc_t<T> b, bool frozen, int64_t lo,     \
                                         int64_t hi, acc_t<T>* pr, acc_t<T>* pn) {            \
    for (int64_t c = lo; c < hi; ++c) {                                                        \
      const int64_t off = c * kChunk, len = std::min(kChunk, n - off);                         \
      update_run<T>(x + off, z + off, out + off, len, a, b, frozen, pr[c], pn[c]);             \
    }                                                                                          \
  }                                                                                            \
  FASTPICARD_CPU_CLONES void row_range(const T* x, const T* z, T* out, int64_t width,          \
                                       acc_t<T> a, acc_t<T> b, const int64_t* batch,           \
                                       const bool* frozen, int64_t lo, int64_t hi,             \
                                       acc_t<T>* rr, acc_t<T>* rn) {                           \
    for (int64_t i = lo; i < hi; ++i) {                                                        \
      const int64_t off = i * width;                                                           \
      const bool fz = frozen != nullptr && frozen[batch[i]];                                   \
      update_run<T>(x + off, z + off, out + off, width, a, b, fz, rr[i], rn[i]);               \
    }                                                                                          \
  }
FASTPICARD_RANGES(float)
FASTPICARD_RANGES(double)
FASTPICARD_RANGES(c10::Half)
FASTPICARD_RANGES(c10::BFloat16)
#undef FASTPICARD_RANGES

template <typename T>
void update_unbatched(const T* x, const T* z, T* out, int64_t n, double alpha, bool frozen,
                      double& res, double& norm) {
  using acc = acc_t<T>;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<acc> pr(chunks), pn(chunks);
  const acc a = static_cast<acc>(alpha), b = static_cast<acc>(1.0 - alpha);
  parallel_chunks(chunks, n <= kSerialElements, [&](int64_t c) {
    chunk_range(x, z, out, n, a, b, frozen, c, c + 1, pr.data(), pn.data());
  });
  for (int64_t c = 0; c < chunks; ++c) {
    res += pr[c];
    norm += pn[c];
  }
}

template <typename T>
void update_batched(const T* x, const T* z, T* out, int64_t rows, int64_t width, double alpha,
                    const int64_t* batch, const bool* frozen, double* res, double* norm) {
  using acc = acc_t<T>;
  std::vector<acc> rr(rows), rn(rows);
  const acc a = static_cast<acc>(alpha), b = static_cast<acc>(1.0 - alpha);
  // Blocks of whole rows, about kChunk elements each.
  const int64_t block = std::max<int64_t>(1, kChunk / std::max<int64_t>(width, 1));
  const int64_t blocks = (rows + block - 1) / block;
  parallel_chunks(blocks, rows * width <= kSerialElements, [&](int64_t c) {
    const int64_t lo = c * block, hi = std::min(rows, lo + block);
    row_range(x, z, out, width, a, b, batch, frozen, lo, hi, rr.data(), rn.data());
  });
  for (int64_t i = 0; i < rows; ++i) {  // rows fold into samples in row order: no atomics
    res[batch[i]] += rr[i];
    norm[batch[i]] += rn[i];
  }
}

}  // namespace

// Arguments were checked by the public op (picard_update.cpp) except the values of batch.
std::tuple<at::Tensor, at::Tensor> picard_update_out_cpu(
    const at::Tensor& x_in, const at::Tensor& z_in, double alpha,
    const c10::optional<at::Tensor>& batch_in, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen_in, bool return_norm, at::Tensor& out) {
  // out may be x or z itself (each element is read before it is written), never a shifted
  // view of them; a non-contiguous input is read from a copy
  const at::Tensor x = x_in.contiguous(), z = z_in.contiguous();
  c10::optional<at::Tensor> batch, frozen;
  if (batch_in.has_value()) {
    batch = batch_in->contiguous();
    check_batch_ids(*batch, num_samples, "picard_update: batch");  // before any write
  }
  if (frozen_in.has_value()) frozen = frozen_in->contiguous();

  const int64_t n = x.numel();
  const int64_t rows = x.dim() == 0 ? 1 : x.size(0);
  const int64_t width = rows == 0 ? 0 : n / rows;
  std::vector<double> res_sq(num_samples, 0.0), norm_sq(num_samples, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "picard_update",
                                  [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    if (batch.has_value()) {
      update_batched<scalar_t>(xp, zp, op, rows, width, alpha, batch->const_data_ptr<int64_t>(),
                               frozen ? frozen->const_data_ptr<bool>() : nullptr, res_sq.data(),
                               norm_sq.data());
    } else {
      const bool fz = frozen.has_value() && frozen->const_data_ptr<bool>()[0];
      update_unbatched<scalar_t>(xp, zp, op, n, alpha, fz, res_sq[0], norm_sq[0]);
    }
  });

  const auto sd = x.options().dtype(stat_dtype(x.scalar_type()));
  at::Tensor res = at::empty({num_samples}, sd);
  at::Tensor norm = at::empty({return_norm ? num_samples : 0}, sd);
  AT_DISPATCH_FLOATING_TYPES(res.scalar_type(), "picard_update_stats", [&] {
    scalar_t* rp = res.data_ptr<scalar_t>();
    scalar_t* np = norm.data_ptr<scalar_t>();
    for (int64_t s = 0; s < num_samples; ++s) {
      rp[s] = static_cast<scalar_t>(std::sqrt(res_sq[s]));
      if (return_norm) np[s] = static_cast<scalar_t>(std::sqrt(norm_sq[s]));
    }
  });
  return {res, norm};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> picard_update_cpu(
    const at::Tensor& x, const at::Tensor& z, double alpha,
    const c10::optional<at::Tensor>& batch, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen, bool return_norm) {
  at::Tensor out = empty_output(x.sizes(), x.options());
  auto [res, norm] =
      picard_update_out_cpu(x, z, alpha, batch, num_samples, frozen, return_norm, out);
  return {out, res, norm};
}

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) {
  m.impl("_picard_update", &picard_update_cpu);
  m.impl("_picard_update_out", &picard_update_out_cpu);
}

}  // namespace fastpicard
