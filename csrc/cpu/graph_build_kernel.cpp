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
#include <type_traits>
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
  const int64_t blocks =
      n < kSerialElements ? 1 : std::min<int64_t>(n / 4096, 8 * at::get_num_threads());
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

// What the first sort moves per entry: the source alone, or a packed record of source, edge
// id and weight. A scatter to random positions costs a cache miss per array written, so the
// arrays are packed into one record and split afterwards, in a sequential pass.
template <typename I, typename W>
struct Entry {
  I col, id;
  W w;
};
template <typename R, typename I, typename W>
struct Rec;
template <typename I, typename W>
struct Rec<I, I, W> {  // the source only (no edge weights, no edge ids wanted)
  static I make(I col, I, W) { return col; }
  static I col(I r) { return r; }
  static W weight(I) { return W(1); }
};
template <typename I, typename W>
struct Rec<Entry<I, W>, I, W> {
  static Entry<I, W> make(I col, I id, W w) { return {col, id, w}; }
  static I col(const Entry<I, W>& r) { return r.col; }
  static W weight(const Entry<I, W>& r) { return r.w; }
};

// Sorts entries [b, e) by source, stably.
template <typename I, typename W, typename R>
void sort_row(R* r, int64_t b, int64_t e) {
  using Ops = Rec<R, I, W>;
  int64_t k = b + 1;
  while (k < e && Ops::col(r[k - 1]) <= Ops::col(r[k])) ++k;
  if (k >= e) return;  // already ascending (inputs sorted by source)
  if (e - b <= 32) {  // insertion sort: stable, fast on short rows
    for (; k < e; ++k) {
      const R x = r[k];
      int64_t j = k;
      for (; j > b && Ops::col(r[j - 1]) > Ops::col(x); --j) r[j] = r[j - 1];
      r[j] = x;
    }
    return;
  }
  std::stable_sort(r + b, r + e, [](const R& x, const R& y) { return Ops::col(x) < Ops::col(y); });
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
                               at::Tensor, at::Tensor, at::Tensor>;

template <typename IN, typename I, typename W, typename R>
BuildResult build_typed(const BuildArgs& a) {
  using Ops = Rec<R, I, W>;
  constexpr bool kPacked = !std::is_same_v<R, I>;
  const int64_t e = a.edge_index.size(1), n = a.n;
  const IN* src = a.edge_index.const_data_ptr<IN>();
  const IN* dst = src + e;
  const W* w = a.weight.has_value() ? a.weight->const_data_ptr<W>() : nullptr;
  const auto iopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<I>::value);
  const auto wopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<W>::value);
  const auto bytes = at::TensorOptions().dtype(at::kByte);

  // pass 1: per-chunk target counts, index and weight checks, self loops noted
  const int64_t chunks = sort_chunks(e, n);
  std::vector<int64_t> eb(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) eb[c] = e * c / chunks;
  // large buffers on huge pages (empty_output): the scatters write to random positions
  at::Tensor hist_t = empty_output({chunks * n}, iopt);
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
  at::Tensor rowptr = empty_output({n + 1}, iopt), col = empty_output({nnz}, iopt);
  at::Tensor rec_t = kPacked ? empty_output({nnz * int64_t(sizeof(R))}, bytes) : col;
  I* rp = rowptr.data_ptr<I>();
  R* rec = reinterpret_cast<R*>(rec_t.data_ptr());
  counts_to_offsets(hist, chunks, n, a.loops ? 1 : 0, rp);
  parallel_chunks(chunks, chunks == 1, [&](int64_t c) {
    I* off = hist + c * n;
    int64_t id = kept_before[c];
    for (int64_t k = eb[c]; k < eb[c + 1]; ++k) {
      const IN s = src[k], d = dst[k];
      if (a.loops && s == d) continue;
      rec[off[d]++] = Ops::make(static_cast<I>(s), static_cast<I>(id++), w ? w[k] : W(1));
    }
  });
  if (a.loops) {  // one loop per node, last in its row: weight 1 or its last input self loop's
    const int64_t blocks = n < kSerialElements ? 1 : 4 * at::get_num_threads();
    parallel_chunks(blocks, blocks == 1, [&](int64_t b) {
      for (int64_t i = n * b / blocks; i < n * (b + 1) / blocks; ++i)
        rec[rp[i + 1] - 1] = Ops::make(static_cast<I>(i), static_cast<I>(kept + i), W(1));
    });
    if constexpr (kPacked) {
      if (w) {
        for (const auto& at_c : loop_at)
          for (int64_t k : at_c) rec[rp[src[k] + 1] - 1].w = w[k];
      }
    }
  }

  // pass 3: degrees (summed in input order, as scatter_add does), then sources ascending
  const std::vector<int64_t> rb = split_rows(rp, n, row_chunks(nnz + n));
  const int64_t row_parts = static_cast<int64_t>(rb.size()) - 1;
  at::Tensor scale_t = empty_output({a.norm == Norm::kSum ? 0 : n}, wopt);
  W* scale = scale_t.data_ptr<W>();
  // gcn: the first node of each part with a negative degree, and that degree
  std::vector<std::pair<int64_t, double>> negative(row_parts, {-1, 0.0});
  parallel_chunks(row_parts, row_parts == 1, [&](int64_t part) {
    for (int64_t i = rb[part]; i < rb[part + 1]; ++i) {
      const int64_t b = rp[i], end = rp[i + 1];
      if (a.norm != Norm::kSum) {
        W deg = 0;
        for (int64_t k = b; k < end; ++k) deg += Ops::weight(rec[k]);
        if (a.norm == Norm::kGcn && deg < W(0) && negative[part].first < 0)
          negative[part] = {i, static_cast<double>(deg)};
        scale[i] = a.norm == Norm::kGcn ? gcn_scale(deg) : (deg == W(0) ? W(0) : W(1) / deg);
      }
      sort_row<I, W>(rec, b, end);
    }
  });
  for (const auto& [node, deg] : negative) {  // the torch path's error, for the first one
    TORCH_CHECK_VALUE(node < 0, "Graph: norm='gcn' scales by D^-1/2, but node ", node,
                      " has the negative weighted in-degree ", deg,
                      " (negative edge weights); use norm='sum' or non-negative weights");
  }

  // pass 4: the records split into col, perm and the normalised weights:
  // (dis[src] * w) * dis[dst] or w * inv[dst], the torch path's float operations
  // (from has_value: an empty edge_weight's data pointer may be null, yet the loops are weighted)
  const bool weighted = a.weight.has_value() || a.norm != Norm::kSum;
  at::Tensor weight = empty_output({weighted ? nnz : 0}, wopt);
  at::Tensor perm = empty_output({a.need_perm ? nnz : 0}, iopt);
  I* cp = col.data_ptr<I>();
  if (kPacked || weighted) {
    W* op = weighted ? weight.data_ptr<W>() : nullptr;
    I* pp = a.need_perm ? perm.data_ptr<I>() : nullptr;
    parallel_chunks(row_parts, row_parts == 1, [&](int64_t part) {
      for (int64_t i = rb[part]; i < rb[part + 1]; ++i) {
        const W si = a.norm == Norm::kSum ? W(1) : scale[i];
        for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
          const R r = rec[k];
          const I c = Ops::col(r);
          if constexpr (kPacked) {
            cp[k] = c;
            if (pp) pp[k] = r.id;
          }
          if (op) {
            const W x = Ops::weight(r);
            op[k] = a.norm == Norm::kGcn ? (scale[c] * x) * si
                                         : (a.norm == Norm::kMean ? x * si : x);
          }
        }
      }
    });
  }
  rec_t = at::Tensor();

  // pass 5: the transpose, a stable counting sort of the CSR entries by source, moving
  // packed (row, entry, weight) records
  const int64_t tchunks = sort_chunks(nnz, n);
  if (tchunks > chunks) {
    hist_t = empty_output({tchunks * n}, iopt);
    hist = hist_t.data_ptr<I>();
  }
  const std::vector<int64_t> tb = split_rows(rp, n, tchunks);
  const int64_t tparts = static_cast<int64_t>(tb.size()) - 1;
  using T = Entry<I, W>;
  at::Tensor trec_t = empty_output({nnz * int64_t(sizeof(T))}, bytes);
  T* trec = reinterpret_cast<T*>(trec_t.data_ptr());
  at::Tensor t_rowptr = empty_output({n + 1}, iopt);
  I* trp = t_rowptr.data_ptr<I>();
  const W* wsrc = weighted ? weight.const_data_ptr<W>() : nullptr;
  parallel_chunks(tparts, tparts == 1, [&](int64_t c) {
    I* cnt = hist + c * n;
    std::fill_n(cnt, n, I(0));
    for (int64_t k = rp[tb[c]]; k < rp[tb[c + 1]]; ++k) ++cnt[cp[k]];
  });
  counts_to_offsets(hist, tparts, n, 0, trp);
  parallel_chunks(tparts, tparts == 1, [&](int64_t c) {
    I* off = hist + c * n;
    for (int64_t i = tb[c]; i < tb[c + 1]; ++i)
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k)
        trec[off[cp[k]]++] = {static_cast<I>(i), static_cast<I>(k), wsrc ? wsrc[k] : W(0)};
  });
  at::Tensor t_col = empty_output({nnz}, iopt), t_perm = empty_output({nnz}, iopt);
  at::Tensor t_weight = empty_output({weighted ? nnz : 0}, wopt);
  I* tcp = t_col.data_ptr<I>();
  I* tpp = t_perm.data_ptr<I>();
  W* twp = weighted ? t_weight.data_ptr<W>() : nullptr;
  parallel_chunks(tparts, tparts == 1, [&](int64_t c) {
    for (int64_t p = trp[tb[c]]; p < trp[tb[c + 1]]; ++p) {
      tpp[p] = trec[p].id;
      tcp[p] = trec[p].col;
      if (twp) twp[p] = trec[p].w;
    }
  });
  return {rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, perm};
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
      // records packed with ids and weights when those are wanted, else the sources alone
      const bool packed = a.weight.has_value() || a.need_perm;
      if (small) {
        r = packed ? build_typed<IN, int32_t, scalar_t, Entry<int32_t, scalar_t>>(a)
                   : build_typed<IN, int32_t, scalar_t, int32_t>(a);
      } else {
        r = packed ? build_typed<IN, int64_t, scalar_t, Entry<int64_t, scalar_t>>(a)
                   : build_typed<IN, int64_t, scalar_t, int64_t>(a);
      }
    });
  });
  auto& [rowptr, col, weight, t_rowptr, t_col, t_perm, t_weight, perm] = r;
  if (!small && std::max(num_nodes, col.size(0)) <= limit) {  // the loops removed made it fit
    for (at::Tensor* t : {&rowptr, &col, &t_rowptr, &t_col, &t_perm, &perm}) *t = t->to(at::kInt);
  }
  return r;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) { m.impl("graph_build", &graph_build_cpu); }

}  // namespace fastpicard
