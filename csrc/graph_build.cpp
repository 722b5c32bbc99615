// Schemas of the Graph construction ops (CPU kernels in cpu/graph_build_kernel.cpp and
// cpu/graph_order_kernel.cpp). fastpicard.Graph calls them; CUDA graphs are built by the
// torch path in fastpicard/graph.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpicard, m) {
  // The CSR (rows = targets, sources ascending, duplicates in input order), its transpose and
  // the normalised weights of fastpicard.Graph.from_edge_index, bit for bit as its torch path
  // builds them. edge_index [2, E] int32/int64 (row 0 sources, row 1 targets); edge_weight
  // [E] float32/float64 or None; norm "gcn" | "mean" | "sum"; add_self_loops as PyG's
  // add_remaining_self_loops. Returns (rowptr, col, weight, t_rowptr, t_col, t_perm,
  // t_weight, perm): weight is empty when norm="sum" without edge_weight (all ones), else
  // dtype of edge_weight or weight_dtype; t_weight = weight[t_perm]; perm (need_perm, else
  // empty) maps CSR entry k to its edge in the list
  // [edges that are not self loops (all edges without add_self_loops), one loop per node].
  // Indices are int32 when num_nodes and the entry count are at most index_limit (which is
  // at most 2^31 - 1; tests lower it to reach the int64 path), else int64.
  m.def(
      "graph_build(Tensor edge_index, int num_nodes, Tensor? edge_weight, str norm, "
      "bool add_self_loops, bool need_perm, ScalarType weight_dtype, int index_limit) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // A node order for locality: order[i] = the old id of the node placed at position i
  // (int64 [N]). method: "rcm" (reverse Cuthill-McKee), "degree" (descending degree),
  // "cluster" (modularity communities laid out contiguously, in BFS order). Neighbours are
  // the union of a node's CSR row and its transposed row.
  m.def(
      "graph_order(Tensor rowptr, Tensor col, Tensor t_rowptr, Tensor t_col, str method) -> "
      "Tensor");
  // The graph relabelled by order (new node i = old node order[i]): each row keeps its
  // entries in their old sequence (so per-row sums are unchanged), so does each transposed
  // row. Returns (rowptr, col, t_rowptr, t_col, t_perm, entry_perm): new CSR entry k is old
  // entry entry_perm[k] (int64; the weights follow as weight[entry_perm]).
  m.def(
      "graph_permute(Tensor rowptr, Tensor col, Tensor t_rowptr, Tensor t_col, Tensor t_perm, "
      "Tensor order) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
