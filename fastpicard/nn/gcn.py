"""A GCN layer with PyG ``GCNConv``'s parameters (``lin.weight``, ``bias``), initialisation and
normalisation, so that ``PIGN(conv="gcn")`` works without torch_geometric and its state_dict is
interchangeable with one built on PyG's ``GCNConv``."""
from __future__ import annotations

import torch
from torch import nn


def gcn_norm_edges(edge_index: torch.Tensor, num_nodes: int):
    """(source, target, weight) of D^-1/2 (A + I) D^-1/2, with PyG's ``add_remaining_self_loops``
    semantics for unweighted graphs: existing self loops are replaced by one loop of weight 1 per
    node; duplicate edges count twice."""
    src, dst = edge_index[0], edge_index[1]
    keep = src != dst
    loop = torch.arange(num_nodes, device=edge_index.device)
    src, dst = torch.cat([src[keep], loop]), torch.cat([dst[keep], loop])
    w = torch.ones(src.numel(), device=edge_index.device)
    deg = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, dst, w)
    inv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    return src, dst, inv[src] * w * inv[dst]


class GCNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.lin.weight)  # PyG's glorot
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        src, dst, w = gcn_norm_edges(edge_index, x.shape[0])
        out = torch.zeros_like(h).index_add_(0, dst, h[src] * w.to(h.dtype).unsqueeze(-1))
        return out + self.bias if self.bias is not None else out
