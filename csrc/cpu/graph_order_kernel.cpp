// CPU kernels of graph_order and graph_permute (schemas in graph_build.cpp).
//
// graph_order computes a node order that puts the nodes whose feature rows a CSR row gathers
// near that row, so the gathers of the graph kernels hit the caches:
//   rcm      reverse Cuthill-McKee: BFS from a minimum-degree node of each component,
//            neighbours in ascending degree, the whole sequence reversed;
//   degree   descending degree (hubs first, ties by id): the rows gathered most often share
//            cache lines and pages;
//   cluster  Louvain modularity communities at every level of its hierarchy, each laid out
//            contiguously (coarsest outermost), in the order a BFS first meets them; the
//            nodes of a finest community in BFS order.
// The orders are computed serially (they are one-off preprocessing; each is a few passes
// over the entries). graph_permute applies an order to a Graph's CSR and transpose.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "common.h"
#include "cpu/graph_isa.h"
#include "cpu/graph_rows.h"

namespace fastpicard {
namespace {

// The validated CSR and transpose of a graph, as raw pointers.
template <typename I>
struct Adj {
  const I *rp, *col, *trp, *tcol;
  int64_t n;
  int64_t degree(int64_t u) const {
    return static_cast<int64_t>(rp[u + 1] - rp[u]) + static_cast<int64_t>(trp[u + 1] - trp[u]);
  }
  template <typename F>
  void for_each_neighbour(int64_t u, const F& f) const {  // both directions, u itself skipped
    for (int64_t k = rp[u]; k < rp[u + 1]; ++k)
      if (col[k] != u) f(static_cast<int64_t>(col[k]));
    for (int64_t k = trp[u]; k < trp[u + 1]; ++k)
      if (tcol[k] != u) f(static_cast<int64_t>(tcol[k]));
  }
};

// Nodes by ascending (or descending) degree, ties by id: a counting sort on the degree.
template <typename I>
std::vector<int64_t> by_degree(const Adj<I>& g, bool descending) {
  const int64_t n = g.n;
  int64_t top = 0;
  for (int64_t u = 0; u < n; ++u) top = std::max(top, g.degree(u));
  std::vector<int64_t> start(top + 2, 0), out(n);
  for (int64_t u = 0; u < n; ++u) {
    const int64_t d = g.degree(u);
    ++start[(descending ? top - d : d) + 1];
  }
  for (int64_t d = 0; d <= top; ++d) start[d + 1] += start[d];
  for (int64_t u = 0; u < n; ++u) {
    const int64_t d = g.degree(u);
    out[start[descending ? top - d : d]++] = u;
  }
  return out;
}

// Cuthill-McKee: BFS of each component from its minimum-degree node, each node's unvisited
// neighbours appended in ascending degree (ties by id).
template <typename I>
std::vector<int64_t> cuthill_mckee(const Adj<I>& g) {
  const int64_t n = g.n;
  std::vector<int64_t> order;
  order.reserve(n);
  std::vector<char> seen(n, 0);
  std::vector<std::pair<int64_t, int64_t>> next;  // (degree, node) of the newly reached
  for (int64_t s : by_degree(g, false)) {
    if (seen[s]) continue;
    seen[s] = 1;
    order.push_back(s);
    for (size_t head = order.size() - 1; head < order.size(); ++head) {
      next.clear();
      g.for_each_neighbour(order[head], [&](int64_t v) {
        if (!seen[v]) {
          seen[v] = 1;
          next.emplace_back(g.degree(v), v);
        }
      });
      std::sort(next.begin(), next.end());
      for (const auto& dv : next) order.push_back(dv.second);
    }
  }
  return order;
}

// Louvain (multi-level modularity clustering) for the "cluster" order. Level 0 is the graph
// itself with unit weights; each higher level is the graph of the communities found below,
// with summed edge weights and each community's internal weight as a self weight.
template <typename I>
struct UnitLevel {
  const Adj<I>& g;
  int64_t n;
  int64_t entries() const {
    return static_cast<int64_t>(g.rp[n]) + static_cast<int64_t>(g.trp[n]);
  }
  template <typename F>
  void for_each_neighbour(int64_t u, const F& f) const {
    g.for_each_neighbour(u, [&](int64_t v) { f(v, 1.0); });
  }
  double self_weight(int64_t) const { return 0.0; }
};

template <typename I>
struct WeightedLevel {  // (I, float: 8 bytes per entry; its first level can have ~2E entries)
  int64_t n = 0;
  std::vector<int64_t> rp;
  std::vector<I> nb;  // CSR of the other communities met, both directions
  std::vector<float> w;
  std::vector<double> self;
  int64_t entries() const { return static_cast<int64_t>(nb.size()); }
  template <typename F>
  void for_each_neighbour(int64_t u, const F& f) const {
    for (int64_t k = rp[u]; k < rp[u + 1]; ++k) f(nb[k], w[k]);
  }
  double self_weight(int64_t u) const { return self[u]; }
};

// Local moving: each node, in `visit` order, joins the neighbouring community with the
// largest modularity gain, for a few passes or until under 1% of the nodes move. Returns
// each node's community, numbered by first appearance in `visit`; sets `count`.
template <typename G>
std::vector<int64_t> local_moving(const G& g, const std::vector<int64_t>& visit,
                                  int64_t& count) {
  const int64_t n = g.n;
  std::vector<int64_t> comm(n);
  std::vector<double> k(n), tot(n), links(n, 0.0);
  double m2 = 0;
  for (int64_t u = 0; u < n; ++u) {
    double d = g.self_weight(u);
    g.for_each_neighbour(u, [&](int64_t, double w) { d += w; });
    k[u] = tot[u] = d;
    comm[u] = u;
    m2 += d;
  }
  std::vector<int64_t> touched;
  constexpr int kMaxPasses = 3;
  for (int pass = 0; pass < kMaxPasses && m2 > 0; ++pass) {
    int64_t moves = 0;
    for (int64_t u : visit) {
      if (k[u] == 0) continue;
      const int64_t cu = comm[u];
      touched.clear();
      touched.push_back(cu);
      g.for_each_neighbour(u, [&](int64_t v, double w) {
        const int64_t c = comm[v];
        if (links[c] == 0 && c != cu) touched.push_back(c);
        links[c] += w;
      });
      tot[cu] -= k[u];
      const double ku = k[u] / m2;
      int64_t best = cu;
      double best_gain = links[cu] - tot[cu] * ku;
      for (int64_t c : touched) {
        const double gain = links[c] - tot[c] * ku;
        if (gain > best_gain) {
          best_gain = gain;
          best = c;
        }
        links[c] = 0;
      }
      tot[best] += k[u];
      if (best != cu) {
        comm[u] = best;
        ++moves;
      }
    }
    if (moves * 100 < n) break;
  }
  std::vector<int64_t> rank(n, -1);
  count = 0;
  for (int64_t u : visit) {
    if (rank[comm[u]] < 0) rank[comm[u]] = count++;
  }
  for (int64_t u = 0; u < n; ++u) comm[u] = rank[comm[u]];
  return comm;
}

// The graph of the communities: summed weights between them, internal weights as self.
template <typename I, typename G>
WeightedLevel<I> aggregate(const G& g, const std::vector<int64_t>& comm, int64_t count) {
  const int64_t n = g.n;
  std::vector<int64_t> start(count + 1, 0), members(n);
  for (int64_t u = 0; u < n; ++u) ++start[comm[u] + 1];
  for (int64_t c = 0; c < count; ++c) start[c + 1] += start[c];
  for (int64_t u = 0; u < n; ++u) members[start[comm[u]]++] = u;  // start[c] -> end of c
  WeightedLevel<I> out;
  out.n = count;
  out.rp.assign(count + 1, 0);
  out.self.assign(count, 0.0);
  out.nb.reserve(g.entries());  // untouched capacity costs address space, not memory
  out.w.reserve(g.entries());
  std::vector<double> acc(count, 0.0);
  std::vector<int64_t> touched;
  for (int64_t c = 0, m = 0; c < count; ++c) {
    touched.clear();
    for (; m < start[c]; ++m) {
      const int64_t u = members[m];
      out.self[c] += g.self_weight(u);
      g.for_each_neighbour(u, [&](int64_t v, double w) {
        const int64_t d = comm[v];
        if (d == c) {
          out.self[c] += w;
          return;
        }
        if (acc[d] == 0) touched.push_back(d);
        acc[d] += w;
      });
    }
    for (int64_t d : touched) {
      out.nb.push_back(static_cast<I>(d));
      out.w.push_back(static_cast<float>(acc[d]));
      acc[d] = 0;
    }
    out.rp[c + 1] = static_cast<int64_t>(out.nb.size());
  }
  return out;
}

// Nodes grouped by their community at every Louvain level (coarsest outermost), each group
// and, innermost, the nodes in BFS order: communities contiguous at every scale.
template <typename I>
std::vector<int64_t> cluster_order(const Adj<I>& g, const std::vector<int64_t>& bfs) {
  const int64_t n = g.n;
  std::vector<int64_t> node_comm(n), order = bfs, scratch(n);
  std::iota(node_comm.begin(), node_comm.end(), 0);
  int64_t count = 0;
  std::vector<int64_t> comm = local_moving(UnitLevel<I>{g, n}, bfs, count);
  WeightedLevel<I> level;
  constexpr int kMaxLevels = 16;
  for (int l = 0; l < kMaxLevels; ++l) {
    const int64_t level_n = l == 0 ? n : level.n;
    for (int64_t u = 0; u < n; ++u) node_comm[u] = comm[node_comm[u]];
    // stable counting sort of the order by this level's community: after the last level
    // the order is sorted by the coarsest community first (an LSD radix sort)
    std::vector<int64_t> start(count + 1, 0);
    for (int64_t u : order) ++start[node_comm[u] + 1];
    for (int64_t c = 0; c < count; ++c) start[c + 1] += start[c];
    for (int64_t u : order) scratch[start[node_comm[u]]++] = u;
    order.swap(scratch);
    if (count * 10 > level_n * 9) break;  // under 10% fewer communities: the hierarchy is done
    level = l == 0 ? aggregate<I>(UnitLevel<I>{g, n}, comm, count)
                   : aggregate<I>(level, comm, count);
    std::vector<int64_t> visit(level.n);
    std::iota(visit.begin(), visit.end(), 0);  // communities are numbered in BFS order
    comm = local_moving(level, visit, count);
  }
  return order;
}

template <typename I>
std::vector<int64_t> order_typed(const Adj<I>& g, c10::string_view method) {
  if (method == "degree") return by_degree(g, true);
  std::vector<int64_t> cm = cuthill_mckee(g);
  if (method == "rcm") {
    std::reverse(cm.begin(), cm.end());
    return cm;
  }
  return cluster_order(g, cm);
}

void check_adjacency(const char* op, const at::Tensor& rowptr, const at::Tensor& col,
                     const at::Tensor& t_rowptr, const at::Tensor& t_col,
                     const at::Tensor* t_perm) {
  const auto idx = col.scalar_type();
  TORCH_CHECK_TYPE(idx == at::kInt || idx == at::kLong, op, ": col must be int32 or int64, got ",
                   idx);
  const std::pair<const char*, const at::Tensor*> args[] = {
      {"rowptr", &rowptr}, {"col", &col}, {"t_rowptr", &t_rowptr}, {"t_col", &t_col},
      {"t_perm", t_perm}};
  for (const auto& [name, t] : args) {
    if (t == nullptr) continue;
    TORCH_CHECK_TYPE(t->scalar_type() == idx, op, ": ", name, " has dtype ", t->scalar_type(),
                     " but col has dtype ", idx);
    TORCH_CHECK_VALUE(t->dim() == 1, op, ": ", name, " must be 1-D, got shape ", t->sizes());
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": ", name, " must be on the CPU, got ",
                      t->device());
  }
  TORCH_CHECK_VALUE(rowptr.numel() >= 1 && t_rowptr.numel() == rowptr.numel(), op,
                    ": rowptr and t_rowptr must both have num_nodes+1 entries, got ",
                    rowptr.numel(), " and ", t_rowptr.numel());
  TORCH_CHECK_VALUE(t_col.numel() == col.numel() && (t_perm == nullptr ||
                                                     t_perm->numel() == col.numel()),
                    op, ": col, t_col and t_perm must have one entry per edge (", col.numel(),
                    ")");
  const int64_t n = rowptr.numel() - 1;
  graph_cpu::check_csr_values(graph_cpu::make_csr(rowptr, col, c10::nullopt, at::Tensor(), n),
                              n, op);
  graph_cpu::check_csr_values(
      graph_cpu::make_csr(t_rowptr, t_col, c10::nullopt, t_perm ? *t_perm : at::Tensor(), n),
      n, op);
}

at::Tensor graph_order_cpu(const at::Tensor& rowptr, const at::Tensor& col,
                           const at::Tensor& t_rowptr, const at::Tensor& t_col,
                           c10::string_view method) {
  TORCH_CHECK_VALUE(method == "rcm" || method == "degree" || method == "cluster",
                    "graph_order: method must be 'rcm', 'degree' or 'cluster', got '", method,
                    "'");
  check_adjacency("graph_order", rowptr, col, t_rowptr, t_col, nullptr);
  const at::Tensor rp = rowptr.contiguous(), c = col.contiguous(), trp = t_rowptr.contiguous(),
                   tc = t_col.contiguous();
  std::vector<int64_t> order;
  AT_DISPATCH_INDEX_TYPES(col.scalar_type(), "graph_order", [&] {
    const Adj<index_t> g{rp.const_data_ptr<index_t>(), c.const_data_ptr<index_t>(),
                         trp.const_data_ptr<index_t>(), tc.const_data_ptr<index_t>(),
                         rp.numel() - 1};
    order = order_typed(g, method);
  });
  at::Tensor out = at::empty({static_cast<int64_t>(order.size())}, at::kLong);
  std::copy(order.begin(), order.end(), out.data_ptr<int64_t>());
  return out;
}

// Rows laid out in the new node order: new row i is old row order[i], its entries in their
// old sequence. Writes the new row pointer and calls emit(new position, old position) for
// every entry (in parallel over rows).
template <typename I, typename F>
void permute_rows(const I* rp, const int64_t* order, int64_t n, I* nrp, const F& emit) {
  nrp[0] = 0;
  for (int64_t i = 0; i < n; ++i) nrp[i + 1] = nrp[i] + (rp[order[i] + 1] - rp[order[i]]);
  const std::vector<int64_t> bounds = split_rows(nrp, n, row_chunks(nrp[n] + n));
  parallel_chunks(static_cast<int64_t>(bounds.size()) - 1, bounds.size() == 2, [&](int64_t c) {
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t q0 = rp[order[i]], len = rp[order[i] + 1] - q0, p0 = nrp[i];
      for (int64_t j = 0; j < len; ++j) emit(p0 + j, q0 + j);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
graph_permute_cpu(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& t_rowptr,
                  const at::Tensor& t_col, const at::Tensor& t_perm, const at::Tensor& order_in) {
  const char* op = "graph_permute";
  check_adjacency(op, rowptr, col, t_rowptr, t_col, &t_perm);
  const int64_t n = rowptr.numel() - 1, e = col.numel();
  TORCH_CHECK_TYPE(order_in.scalar_type() == at::kLong, op, ": order must be int64, got ",
                   order_in.scalar_type());
  TORCH_CHECK_VALUE(order_in.dim() == 1 && order_in.numel() == n && order_in.device().is_cpu(),
                    op, ": order must be a 1-D CPU tensor of num_nodes=", n,
                    " entries, got shape ", order_in.sizes(), " on ", order_in.device());
  const at::Tensor order = order_in.contiguous();
  const int64_t* ord = order.const_data_ptr<int64_t>();
  std::vector<int64_t> inv(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t o = ord[i];
    TORCH_CHECK_VALUE(o >= 0 && o < n && inv[o] < 0, op,
                      ": order must be a permutation of [0, num_nodes=", n, "), got ", o,
                      " at position ", i, o >= 0 && o < n ? " (repeated)" : " (out of range)");
    inv[o] = i;
  }
  const auto iopt = col.options();
  at::Tensor nrp = at::empty({n + 1}, iopt), ncol = at::empty({e}, iopt),
             ntrp = at::empty({n + 1}, iopt), ntcol = at::empty({e}, iopt),
             ntperm = at::empty({e}, iopt), entry_perm = at::empty({e}, at::kLong);
  AT_DISPATCH_INDEX_TYPES(col.scalar_type(), "graph_permute", [&] {
    using I = index_t;
    const at::Tensor rp = rowptr.contiguous(), c = col.contiguous(),
                     trp = t_rowptr.contiguous(), tc = t_col.contiguous(),
                     tp = t_perm.contiguous();
    const I *col_old = c.const_data_ptr<I>(), *tcol_old = tc.const_data_ptr<I>(),
            *tperm_old = tp.const_data_ptr<I>();
    I *col_new = ncol.data_ptr<I>(), *tcol_new = ntcol.data_ptr<I>(),
      *tperm_new = ntperm.data_ptr<I>();
    int64_t* ep = entry_perm.data_ptr<int64_t>();
    std::vector<I> new_pos(e);  // old CSR entry -> new
    permute_rows(rp.const_data_ptr<I>(), ord, n, nrp.data_ptr<I>(), [&](int64_t p, int64_t q) {
      col_new[p] = static_cast<I>(inv[col_old[q]]);
      ep[p] = q;
      new_pos[q] = static_cast<I>(p);
    });
    // the transposed rows keep their sequence too, pointing at the moved CSR entries
    permute_rows(trp.const_data_ptr<I>(), ord, n, ntrp.data_ptr<I>(), [&](int64_t p, int64_t q) {
      tcol_new[p] = static_cast<I>(inv[tcol_old[q]]);
      tperm_new[p] = new_pos[tperm_old[q]];
    });
  });
  return {nrp, ncol, ntrp, ntcol, ntperm, entry_perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpicard, CPU, m) {
  m.impl("graph_order", &graph_order_cpu);
  m.impl("graph_permute", &graph_permute_cpu);
}

}  // namespace fastpicard
