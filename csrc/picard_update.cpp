// Fused smoothed Picard update:  x_new = alpha*x + (1-alpha)*z  and, in the same pass over
// memory, the per-sample residual ||x_new - x||_2 (and optionally ||x_new||_2).
//
// Determinism: work is cut into fixed-size chunks whose partial sums are combined in a fixed
// order, so results do not depend on the thread count.
#include <torch/library.h>
#include <ATen/Dispatch.h>

#include <vector>

#include "common.h"

namespace fastpicard {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial sum in the unbatched case

struct Stats {
  double res = 0.0;
  double norm = 0.0;
};

// One contiguous run of elements; returns sum of squares of (x_new - x) and of x_new.
template <typename scalar_t>
inline void update_run(const scalar_t* x, const scalar_t* z,  // out may alias x or z
                       scalar_t* out, int64_t n, acc_t<scalar_t> alpha,
                       acc_t<scalar_t> beta, bool frozen, acc_t<scalar_t>& res,
                       acc_t<scalar_t>& norm) {
  using acc = acc_t<scalar_t>;
  acc r = 0, s = 0;
  if (frozen) {
    // Converged sample: rows pass through unchanged, residual contribution is exactly 0.
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) {
      const acc xv = static_cast<acc>(x[j]);
      out[j] = x[j];
      s += xv * xv;
    }
  } else {
#pragma omp simd reduction(+ : r, s)
    for (int64_t j = 0; j < n; ++j) {
      const acc xv = static_cast<acc>(x[j]);
      const acc zv = static_cast<acc>(z[j]);
      const acc nv = alpha * xv + beta * zv;
      out[j] = static_cast<scalar_t>(nv);
      const acc d = nv - xv;
      r += d * d;
      s += nv * nv;
    }
  }
  res = r;
  norm = s;
}

template <typename scalar_t>
void update_unbatched(const scalar_t* x, const scalar_t* z, scalar_t* out, int64_t n,
                      double alpha, bool frozen, Stats& st) {
  using acc = acc_t<scalar_t>;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<acc> pr(chunks), pn(chunks);
  const acc a = static_cast<acc>(alpha), b = static_cast<acc>(1.0 - alpha);
  at::parallel_for(0, chunks, kSerialElements / kChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t off = c * kChunk, len = std::min(kChunk, n - off);
      update_run<scalar_t>(x + off, z + off, out + off, len, a, b, frozen, pr[c], pn[c]);
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    st.res += pr[c];
    st.norm += pn[c];
  }
}

template <typename scalar_t>
void update_batched(const scalar_t* x, const scalar_t* z, scalar_t* out, int64_t rows,
                    int64_t width, double alpha, const int64_t* batch, const bool* frozen,
                    std::vector<Stats>& st) {
  using acc = acc_t<scalar_t>;
  std::vector<acc> rr(rows), rn(rows);
  const acc a = static_cast<acc>(alpha), b = static_cast<acc>(1.0 - alpha);
  const int64_t grain = std::max<int64_t>(1, kSerialElements / std::max<int64_t>(width, 1));
  at::parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t off = i * width;
      const bool fz = frozen != nullptr && frozen[batch[i]];
      update_run<scalar_t>(x + off, z + off, out + off, width, a, b, fz, rr[i], rn[i]);
    }
  });
  // Rows are folded into their samples in row order: deterministic, no atomics.
  for (int64_t i = 0; i < rows; ++i) {
    st[batch[i]].res += rr[i];
    st[batch[i]].norm += rn[i];
  }
}

void check_args(const at::Tensor& x, const at::Tensor& z, double alpha,
                const c10::optional<at::Tensor>& batch, int64_t num_samples,
                const c10::optional<at::Tensor>& frozen) {
  TORCH_CHECK_VALUE(x.sizes() == z.sizes(), "picard_update: z has shape ", z.sizes(),
                    " but x has shape ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == z.scalar_type(), "picard_update: z has dtype ",
                   z.scalar_type(), " but x has dtype ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device() == z.device(), "picard_update: z is on ", z.device(),
                    " but x is on ", x.device());
  TORCH_CHECK_VALUE(alpha >= 0.0 && alpha < 1.0, "picard_update: alpha must lie in [0, 1), got ",
                    alpha);
  TORCH_CHECK_VALUE(num_samples >= 0, "picard_update: num_samples must be >= 0, got ",
                    num_samples);
  if (batch.has_value()) {
    const auto& b = *batch;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kLong, "picard_update: batch must be int64, got ",
                     b.scalar_type());
    TORCH_CHECK_VALUE(x.dim() >= 1 && b.dim() == 1 && b.size(0) == x.size(0),
                      "picard_update: batch must have shape [", x.dim() ? x.size(0) : 1,
                      "] (one id per row of x), got ", b.sizes());
    TORCH_CHECK_VALUE(b.device() == x.device(), "picard_update: batch is on ", b.device(),
                      " but x is on ", x.device());
  } else {
    TORCH_CHECK_VALUE(num_samples == 1, "picard_update: num_samples=", num_samples,
                      " needs a batch vector");
  }
  if (frozen.has_value()) {
    const auto& f = *frozen;
    TORCH_CHECK_TYPE(f.scalar_type() == at::kBool, "picard_update: frozen must be bool, got ",
                     f.scalar_type());
    TORCH_CHECK_VALUE(f.dim() == 1 && f.size(0) == num_samples,
                      "picard_update: frozen must have shape [num_samples=", num_samples,
                      "], got ", f.sizes());
    TORCH_CHECK_VALUE(f.device() == x.device(), "picard_update: frozen is on ", f.device(),
                      " but x is on ", x.device());
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> picard_update_out_cpu(
    const at::Tensor& x_in, const at::Tensor& z_in, double alpha,
    const c10::optional<at::Tensor>& batch_in, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen_in, bool return_norm, at::Tensor& out) {
  check_args(x_in, z_in, alpha, batch_in, num_samples, frozen_in);
  TORCH_CHECK_VALUE(out.sizes() == x_in.sizes() && out.scalar_type() == x_in.scalar_type() &&
                        out.device() == x_in.device(),
                    "picard_update: out must match x (shape ", x_in.sizes(), ", dtype ",
                    x_in.scalar_type(), "), got shape ", out.sizes(), ", dtype ",
                    out.scalar_type());
  TORCH_CHECK_VALUE(out.is_contiguous(), "picard_update: out must be contiguous");
  const at::Tensor x = x_in.contiguous(), z = z_in.contiguous();
  c10::optional<at::Tensor> batch, frozen;
  if (batch_in.has_value()) {
    batch = batch_in->contiguous();
    check_batch_ids(*batch, num_samples, "picard_update: batch");
  }
  if (frozen_in.has_value()) frozen = frozen_in->contiguous();

  const int64_t n = x.numel();
  const int64_t rows = x.dim() == 0 ? 1 : x.size(0);
  const int64_t width = rows == 0 ? 0 : n / rows;
  std::vector<Stats> st(num_samples);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "picard_update",
                                  [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    if (batch.has_value()) {
      update_batched<scalar_t>(xp, zp, op, rows, width, alpha, batch->data_ptr<int64_t>(),
                               frozen ? frozen->data_ptr<bool>() : nullptr, st);
    } else {
      const bool fz = frozen.has_value() && frozen->data_ptr<bool>()[0];
      update_unbatched<scalar_t>(xp, zp, op, n, alpha, fz, st[0]);
    }
  });

  const auto opts = x.options().dtype(stat_dtype(x.scalar_type()));
  at::Tensor res = at::empty({num_samples}, opts.dtype(at::kDouble));
  at::Tensor norm = at::empty({return_norm ? num_samples : 0}, opts.dtype(at::kDouble));
  double* rp = res.data_ptr<double>();
  double* np = norm.data_ptr<double>();
  for (int64_t s = 0; s < num_samples; ++s) {
    rp[s] = std::sqrt(st[s].res);
    if (return_norm) np[s] = std::sqrt(st[s].norm);
  }
  return {res.to(opts.dtype()), norm.to(opts.dtype())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> picard_update_cpu(
    const at::Tensor& x, const at::Tensor& z, double alpha,
    const c10::optional<at::Tensor>& batch, int64_t num_samples,
    const c10::optional<at::Tensor>& frozen, bool return_norm) {
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  auto [res, norm] =
      picard_update_out_cpu(x, z, alpha, batch, num_samples, frozen, return_norm, out);
  return {out, res, norm};
}

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  m.def(
      "picard_update(Tensor x, Tensor z, float alpha, Tensor? batch=None, int num_samples=1, "
      "Tensor? frozen=None, bool return_norm=False) -> (Tensor, Tensor, Tensor)");
  m.def(
      "picard_update_out(Tensor x, Tensor z, float alpha, Tensor? batch, int num_samples, "
      "Tensor? frozen, bool return_norm, Tensor(a!) out) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) {
  m.impl("picard_update", &picard_update_cpu);
  m.impl("picard_update_out", &picard_update_out_cpu);
}

}  // namespace fastpicard
