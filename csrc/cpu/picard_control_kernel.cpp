// CPU kernel of picard_control_: the rules of picard_control.cpp as one scalar pass over the
// samples. Arguments were checked by the public op (picard_control.cpp).
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "picard_control.h"

namespace fastpicard {
namespace {

template <typename T>
void control_samples(int64_t S, const T* res, const T* norm, bool* frozen, bool* converged,
                     bool* diverged, int64_t* iters, T* stats, T* trace_row, T tol, bool rel,
                     T factor, bool* improved, bool* new_div, int64_t* summary) {
  T* min_abs = stats + kMinAbs * S;
  T* res_abs = stats + kAbs * S;
  T* res_rel = stats + kRel * S;
  const T tiny = std::numeric_limits<T>::min();
  int64_t n_active = 0, n_improved = 0, n_new_div = 0, n_div = 0;
  for (int64_t s = 0; s < S; ++s) {
    improved[s] = new_div[s] = false;
    if (frozen[s]) {
      trace_row[s] = std::numeric_limits<T>::quiet_NaN();
      n_div += diverged[s];
      continue;
    }
    const T a = res[s];
    const T r = a / std::max(norm[s], tiny);
    const T crit = rel ? r : a;
    trace_row[s] = crit;
    iters[s] += 1;
    bool record = true;
    if (!std::isfinite(a) || a > factor * min_abs[s]) {
      diverged[s] = frozen[s] = new_div[s] = true;
      ++n_new_div;
      ++n_div;
    } else {
      min_abs[s] = std::min(min_abs[s], a);
      if (crit < tol) {
        converged[s] = frozen[s] = true;
      } else {
        ++n_active;
        record = improved[s] = crit < (rel ? res_rel[s] : res_abs[s]);
        n_improved += record;
      }
    }
    if (record) {
      res_abs[s] = a;
      res_rel[s] = r;
    }
  }
  summary[kNumActive] = n_active;
  summary[kNumImproved] = n_improved;
  summary[kNumNewDiverged] = n_new_div;
  summary[kNumDiverged] = n_div;
}

void picard_control_cpu(const at::Tensor& res_in, const at::Tensor& norm_in, at::Tensor& frozen,
                        at::Tensor& converged, at::Tensor& diverged, at::Tensor& iters,
                        at::Tensor& stats, at::Tensor& trace, at::Tensor& improved,
                        at::Tensor& new_div, at::Tensor& summary, int64_t step, double tol,
                        bool rel, double divergence_factor) {
  const at::Tensor res = res_in.contiguous(), norm = norm_in.contiguous();
  const int64_t S = res.numel();
  AT_DISPATCH_FLOATING_TYPES(res.scalar_type(), "picard_control", [&] {
    control_samples<scalar_t>(
        S, res.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(),
        frozen.data_ptr<bool>(), converged.data_ptr<bool>(), diverged.data_ptr<bool>(),
        iters.data_ptr<int64_t>(), stats.data_ptr<scalar_t>(),
        trace.data_ptr<scalar_t>() + step * S, static_cast<scalar_t>(tol), rel,
        static_cast<scalar_t>(divergence_factor), improved.data_ptr<bool>(),
        new_div.data_ptr<bool>(), summary.data_ptr<int64_t>());
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) { m.impl("_picard_control_", &picard_control_cpu); }

}  // namespace fastpicard
