// CPU kernel of graph_build (schema in graph_build.cpp).
//
// Two stable counting sorts replace the torch path's two global argsorts:
//   1. edges by target (rows), each chunk of edges counting into its own histogram, so the
//      entries of a row keep their input order. A row's degree is summed in that order,
//      which is the order torch's scatter_add adds them in: the same float sums. Then each
//      row is sorted by source (stably, so duplicates keep their input order).
//   2. the CSR entries by source (the transpose), in CSR order, so each transposed row lists
//      its targets ascending, as argsort(col * n + row, stable=True) does.
// The normalised weights use the same float operations as the torch path, in the same order,
// so the result is bit for bit the same.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common.h"
#include "cpu/graph_rows.h"

namespace fastpicard {
namespace {

enum class Norm { kSum, kMean, kGcn };

Norm parse_norm(c10::string_view norm) {
  if (norm == "gcn") return Norm::kGcn;
  if (norm == "mean") return Norm::kMean;
  if (norm == "sum") return Norm::kSum;
  TORCH_CHECK_VALUE(false, "graph_build: norm must be 'gcn', 'mean' or 'sum', got '", norm, "'");
}

// Chunks of a parallel stable counting sort over `items` with keys in [0, keys). Each chunk
// counts into its own histogram of `keys` slots, so the chunk count is bounded by memory
// (histograms no larger than the items) as well as by the threads.
int64_t sort_chunks(int64_t items, int64_t keys) {
  if (items < kSerialElements) return 1;
  const int64_t threads = at::get_num_threads();
  const int64_t by_memory = std::max<int64_t>(1, items / std::max<int64_t>(keys, 1));
  return std::max<int64_t>(1, std::min({2 * threads, by_memory, items / kSerialElements}));
}

// hist [chunks, n] holds per-chunk key counts. Turns each count into the chunk's first output
// position for that key (chunk c's entries of key j follow those of chunks < c: stable) and
// writes ptr [n + 1]; `extra` slots per key are reserved after the chunks' entries.
template <typename I>
void counts_to_offsets(I* hist, int64_t chunks, int64_t n, int64_t extra, I* ptr) {
  const int64_t blocks = n < kSerialElements ? 1 : std::min<int64_t>(n / 4096, 8 * at::get_num_threads());
  std::vector<int64_t> start(blocks + 1, 0);
  auto first = [&](int64_t b) { return n * b / blocks; };
  parallel_chunks(blocks, blocks == 1, [&](int64_t b) {
    int64_t s = 0;
    for (int64_t i = first(b); i < first(b + 1); ++i) {
      for (int64_t c = 0; c < chunks; ++c) s += hist[c * n + i];
      s += extra;
    }
    start[b + 1] = s;
  });
  for (int64_t b = 0; b < blocks; ++b) start[b + 1] += start[b];
  parallel_chunks(blocks, blocks == 1, [&](int64_t b) {
    int64_t off = start[b];
    for (int64_t i = first(b); i < first(b + 1); ++i) {
      ptr[i] = static_cast<I>(off);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t t = hist[c * n + i];
        hist[c * n + i] = static_cast<I>(off);
        off += t;
      }
      off += extra;
    }
  });
  ptr[n] = static_cast<I>(start[blocks]);
}

// Sorts entries [b, e) by col, stably, moving w and perm (either may be null) along.
template <typename I, typename W>
void sort_row(I* col, W* w, I* perm, int64_t b, int64_t e, std::vector<int64_t>& idx,
              std::vector<char>& tmp) {
  int64_t k = b + 1;
  while (k < e && col[k - 1] <= col[k]) ++k;
  if (k >= e) return;  // already ascending (inputs sorted by source)
  if (e - b <= 32) {  // insertion sort: stable, fast on short rows
    for (; k < e; ++k) {
      const I c = col[k];
      const W wk = w ? w[k] : W(0);
      const I pk = perm ? perm[k] : I(0);
      int64_t j = k;
      for (; j > b && col[j - 1] > c; --j) {
        col[j] = col[j - 1];
        if (w) w[j] = w[j - 1];
        if (perm) perm[j] = perm[j - 1];
      }
      col[j] = c;
      if (w) w[j] = wk;
      if (perm) perm[j] = pk;
    }
    return;
  }
  const int64_t len = e - b;
  idx.resize(len);
  std::iota(idx.begin(), idx.end(), b);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return col[x] < col[y]; });
  auto apply = [&](auto* a) {
    using T = std::remove_pointer_t<decltype(a)>;
    if (a == nullptr) return;
    tmp.resize(len * sizeof(T));
    T* t = reinterpret_cast<T*>(tmp.data());
    for (int64_t i = 0; i < len; ++i) t[i] = a[idx[i]];
    std::copy(t, t + len, a + b);
  };
  apply(col);
  apply(w);
  apply(perm);
}

template <typename W>
inline W gcn_scale(W deg) {  // torch: deg.pow(-0.5).masked_fill(== inf, 0), i.e. 1 / sqrt
  const W r = W(1) / std::sqrt(deg);
  return r == std::numeric_limits<W>::infinity() ? W(0) : r;
}

struct BuildArgs {
  at::Tensor edge_index;            // [2, E], contiguous
  c10::optional<at::Tensor> weight; // [E], contiguous
  int64_t n = 0;
  Norm norm = Norm::kGcn;
  bool loops = true, need_perm = false;
  at::ScalarType wdtype = at::kFloat;
};

using BuildResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor, at::Tensor>;

template <typename IN, typename I, typename W>
BuildResult build_typed(const BuildArgs& a) {
  const int64_t e = a.edge_index.size(1), n = a.n;
  const IN* src = a.edge_index.const_data_ptr<IN>();
  const IN* dst = src + e;
  const W* w = a.weight.has_value() ? a.weight->const_data_ptr<W>() : nullptr;
  const auto iopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<I>::value);
  const auto wopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<W>::value);

  // pass 1: per-chunk target counts, index and weight checks, self loops noted
  const int64_t chunks = sort_chunks(e, n);
  std::vector<int64_t> eb(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) eb[c] = e * c / chunks;
  at::Tensor hist_t = at::empty({chunks * n}, iopt);
  I* hist = hist_t.data_ptr<I>();
  std::vector<std::vector<int64_t>> loop_at(chunks);
  std::vector<char> bad_index(chunks, 0), bad_weight(chunks, 0);
  const uint64_t un = static_cast<uint64_t>(n);
  parallel_chunks(chunks, chunks == 1, [&](int64_t c) {
    I* cnt = hist + c * n;
    std::fill_n(cnt, n, I(0));
    bool bi = false, bw = false;
    for (int64_t k = eb[c]; k < eb[c + 1]; ++k) {
      const int64_t s = src[k], d = dst[k];
      if (static_cast<uint64_t>(s) >= un || static_cast<uint64_t>(d) >= un) {
        bi = true;
        continue;
      }
      if (w != nullptr && !std::isfinite(w[k])) bw = true;
      if (a.loops && s == d) {
        loop_at[c].push_back(k);
        continue;
      }
      ++cnt[d];
    }
    bad_index[c] = bi;
    bad_weight[c] = bw;
  });
  if (std::find(bad_index.begin(), bad_index.end(), 1) != bad_index.end()) {
    const int64_t lo = a.edge_index.min().item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0, "Graph: edge_index contains the negative node index ", lo);
    TORCH_CHECK_INDEX(false, "Graph: edge_index contains node ", a.edge_index.max().item<int64_t>(),
                      ", but num_nodes=", n, " (num_nodes is too small)");
  }
  TORCH_CHECK_VALUE(std::find(bad_weight.begin(), bad_weight.end(), 1) == bad_weight.end(),
                    "Graph: edge_weight contains NaN or Inf");
  std::vector<int64_t> kept_before(chunks + 1, 0);
  for (int64_t c = 0; c < chunks; ++c)
    kept_before[c + 1] = kept_before[c] + (eb[c + 1] - eb[c]) - int64_t(loop_at[c].size());
  const int64_t kept = kept_before[chunks], nnz = kept + (a.loops ? n : 0);

  // pass 2: scatter the edges into their rows, in input order within each row
  at::Tensor rowptr = at::empty({n + 1}, iopt), col = at::empty({nnz}, iopt);
  at::Tensor wv = w ? at::empty({nnz}, wopt) : at::Tensor();
  at::Tensor perm = at::empty({a.need_perm ? nnz : 0}, iopt);
  I* rp = rowptr.data_ptr<I>();
  I* cp = col.data_ptr<I>();
  W* wp = w ? wv.data_ptr<W>() : nullptr;
  I* pp = a.need_perm ? perm.data_ptr<I>() : nullptr;
  counts_to_offsets(hist, chunks, n, a.loops ? 1 : 0, rp);
  parallel_chunks(chunks, chunks == 1, [&](int64_t c) {
    I* off = hist + c * n;
    int64_t id = kept_before[c];
    for (int64_t k = eb[c]; k < eb[c + 1]; ++k) {
      const IN s = src[k], d = dst[k];
      if (a.loops && s == d) continue;
      const I pos = off[d]++;
      cp[pos] = static_cast<I>(s);
      if (wp) wp[pos] = w[k];
      if (pp) pp[pos] = static_cast<I>(id);
      ++id;
    }
  });
  if (a.loops) {  // one loop per node, last in its row: weight 1 or its last input self loop's
    const int64_t blocks = n < kSerialElements ? 1 : 4 * at::get_num_threads();
    parallel_chunks(blocks, blocks == 1, [&](int64_t b) {
      for (int64_t i = n * b / blocks; i < n * (b + 1) / blocks; ++i) {
        const int64_t pos = rp[i + 1] - 1;
        cp[pos] = static_cast<I>(i);
        if (wp) wp[pos] = W(1);
        if (pp) pp[pos] = static_cast<I>(kept + i);
      }
    });
    if (wp) {
      for (const auto& at_c : loop_at)
        for (int64_t k : at_c) wp[rp[src[k] + 1] - 1] = w[k];
    }
  }

  // pass 3: degrees (summed in input order, as scatter_add does), then sources ascending
  const std::vector<int64_t> rb = split_rows(rp, n, row_chunks(nnz + n));
  const int64_t row_parts = static_cast<int64_t>(rb.size()) - 1;
  at::Tensor scale_t = at::empty({a.norm == Norm::kSum ? 0 : n}, wopt);
  W* scale = scale_t.data_ptr<W>();
  parallel_chunks(row_parts, row_parts == 1, [&](int64_t part) {
    std::vector<int64_t> idx;
    std::vector<char> tmp;
    for (int64_t i = rb[part]; i < rb[part + 1]; ++i) {
      const int64_t b = rp[i], end = rp[i + 1];
      if (a.norm != Norm::kSum) {
        W deg = 0;
        for (int64_t k = b; k < end; ++k) deg += wp ? wp[k] : W(1);
        scale[i] = a.norm == Norm::kGcn ? gcn_scale(deg) : (deg == W(0) ? W(0) : W(1) / deg);
      }
      sort_row(cp, wp, pp, b, end, idx, tmp);
    }
  });

  // pass 4: normalised weights, (dis[src] * w) * dis[dst] or w * inv[dst] as in torch
  at::Tensor weight = at::empty({0}, wopt);
  if (w != nullptr || a.norm != Norm::kSum) {
    weight = w ? wv : at::empty({nnz}, wopt);
    W* op = weight.data_ptr<W>();
    if (a.norm != Norm::kSum) {
      parallel_chunks(row_parts, row_parts == 1, [&](int64_t part) {
        for (int64_t i = rb[part]; i < rb[part + 1]; ++i) {
          const W si = scale[i];
          for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
            const W x = wp ? wp[k] : W(1);
            op[k] = a.norm == Norm::kGcn ? (scale[cp[k]] * x) * si : x * si;
          }
        }
      });
    }
  }

  // pass 5: the transpose, a stable counting sort of the CSR entries by source
  const int64_t tchunks = sort_chunks(nnz, n);
  if (tchunks > chunks) {
    hist_t = at::empty({tchunks * n}, iopt);
    hist = hist_t.data_ptr<I>();
  }
  const std::vector<int64_t> tb = split_rows(rp, n, tchunks);
  const int64_t tparts = static_cast<int64_t>(tb.size()) - 1;
  at::Tensor t_rowptr = at::empty({n + 1}, iopt), t_col = at::empty({nnz}, iopt),
             t_perm = at::empty({nnz}, iopt);
  I* trp = t_rowptr.data_ptr<I>();
  I* tcp = t_col.data_ptr<I>();
  I* tpp = t_perm.data_ptr<I>();
  parallel_chunks(tparts, tparts == 1, [&](int64_t c) {
    I* cnt = hist + c * n;
    std::fill_n(cnt, n, I(0));
    for (int64_t k = rp[tb[c]]; k < rp[tb[c + 1]]; ++k) ++cnt[cp[k]];
  });
  counts_to_offsets(hist, tparts, n, 0, trp);
  parallel_chunks(tparts, tparts == 1, [&](int64_t c) {
    I* off = hist + c * n;
    for (int64_t i = tb[c]; i < tb[c + 1]; ++i) {
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const I pos = off[cp[k]]++;
        tpp[pos] = static_cast<I>(k);
        tcp[pos] = static_cast<I>(i);
      }
    }
  });
  return {rowptr, col, weight, t_rowptr, t_col, t_perm, perm};
}

BuildResult graph_build_cpu(const at::Tensor& edge_index, int64_t num_nodes,
                            const c10::optional<at::Tensor>& edge_weight, c10::string_view norm,
                            bool add_self_loops, bool need_perm, at::ScalarType weight_dtype,
                            int64_t index_limit) {
  const auto it = edge_index.scalar_type();
  TORCH_CHECK_TYPE(it == at::kInt || it == at::kLong,
                   "Graph: edge_index must be int32 or int64 here, got ", it);
  TORCH_CHECK_VALUE(edge_index.dim() == 2 && edge_index.size(0) == 2,
                    "Graph: edge_index must have shape [2, num_edges], got ", edge_index.sizes());
  TORCH_CHECK_VALUE(num_nodes >= 0, "Graph: num_nodes must be >= 0, got ", num_nodes);
  BuildArgs a;
  a.edge_index = edge_index.contiguous();
  a.n = num_nodes;
  a.norm = parse_norm(norm);
  a.loops = add_self_loops;
  a.need_perm = need_perm;
  a.wdtype = weight_dtype;
  const int64_t e = edge_index.size(1);
  if (edge_weight.has_value()) {
    const auto& ew = *edge_weight;
    TORCH_CHECK_TYPE(ew.scalar_type() == at::kFloat || ew.scalar_type() == at::kDouble,
                     "Graph: edge_weight must be float32 or float64 here, got ", ew.scalar_type());
    TORCH_CHECK_VALUE(ew.dim() == 1 && ew.size(0) == e, "Graph: edge_weight must have shape "
                      "[num_edges=", e, "], got ", ew.sizes());
    TORCH_CHECK_VALUE(ew.device() == edge_index.device(), "Graph: edge_weight is on ",
                      ew.device(), " but edge_index is on ", edge_index.device());
    a.weight = ew.contiguous();
    a.wdtype = ew.scalar_type();
  }
  TORCH_CHECK_TYPE(a.wdtype == at::kFloat || a.wdtype == at::kDouble,
                   "Graph: weight_dtype must be float32 or float64, got ", a.wdtype);
  // int32 indices when every index and entry position fits (checked on an upper bound of the
  // entry count here, on the exact one below)
  const int64_t limit = std::min<int64_t>(index_limit, std::numeric_limits<int32_t>::max());
  const bool small = num_nodes <= limit && e + (add_self_loops ? num_nodes : 0) <= limit;
  BuildResult r;
  AT_DISPATCH_INDEX_TYPES(it, "graph_build", [&] {
    using IN = index_t;
    AT_DISPATCH_FLOATING_TYPES(a.wdtype, "graph_build", [&] {
      if (small) {
        r = build_typed<IN, int32_t, scalar_t>(a);
      } else {
        r = build_typed<IN, int64_t, scalar_t>(a);
      }
    });
  });
  auto& [rowptr, col, weight, t_rowptr, t_col, t_perm, perm] = r;
  if (!small && std::max(num_nodes, col.size(0)) <= limit) {  // the loops removed made it fit
    for (at::Tensor* t : {&rowptr, &col, &t_rowptr, &t_col, &t_perm, &perm}) *t = t->to(at::kInt);
  }
  return r;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) { m.impl("graph_build", &graph_build_cpu); }

}  // namespace fastpicard
