// Row ranges of about equal work for the graph construction kernels (graph_build,
// graph_order, graph_permute).
#pragma once
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

#include "common.h"

namespace fastpicard {

// Parts for a row pass over `work` entries + rows: one when small, else a few per thread
// (parallel_chunks hands them out dynamically).
inline int64_t row_chunks(int64_t work) {
  return work < kSerialElements ? 1 : 4 * at::get_num_threads();
}

// bounds[0..parts]: rows [bounds[c], bounds[c+1]) cost about (entries + rows) / parts each.
// rp is a valid row pointer of n rows.
template <typename I>
std::vector<int64_t> split_rows(const I* rp, int64_t n, int64_t parts) {
  std::vector<int64_t> bounds(parts + 1, n);
  bounds[0] = 0;
  const int64_t total = static_cast<int64_t>(rp[n]) + n;
  for (int64_t c = 1; c < parts; ++c) {
    const int64_t target = total / parts * c + total % parts * c / parts;
    int64_t lo = bounds[c - 1], hi = n;
    while (lo < hi) {  // first row whose cost before it reaches target
      const int64_t mid = lo + (hi - lo) / 2;
      if (static_cast<int64_t>(rp[mid]) + mid < target) lo = mid + 1;
      else hi = mid;
    }
    bounds[c] = lo;
  }
  return bounds;
}

}  // namespace fastpicard
