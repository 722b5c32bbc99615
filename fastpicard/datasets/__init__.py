"""Datasets: Planetoid citation graphs (Cora and CiteSeer embedded, no download) and the
paper's drop-in feature noise."""
from .noise import dropin_noise
from .planetoid import GraphData, planetoid, row_normalize

__all__ = ["planetoid", "dropin_noise", "row_normalize", "GraphData"]
