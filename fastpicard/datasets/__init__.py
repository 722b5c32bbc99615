"""Datasets: Planetoid citation graphs (Cora and CiteSeer embedded, no download) and the
paper's drop-in feature noise; a generated long-range task and a reader for LRGB PascalVOC-SP."""
from .long_range import GraphBatch, long_range_graphs
from .lrgb import pascalvoc_sp
from .noise import dropin_noise
from .planetoid import GraphData, planetoid, row_normalize

__all__ = ["planetoid", "dropin_noise", "row_normalize", "GraphData"]
__all__ += ["GraphBatch", "long_range_graphs", "pascalvoc_sp"]
# Navier-Stokes vorticity (generated, or FNO's files) and image sets from their original files
from .images import cifar10, fashion_mnist, images
from .navier_stokes import NavierStokesData, navier_stokes, read_navier_stokes

__all__ += ["navier_stokes", "read_navier_stokes", "NavierStokesData", "fashion_mnist",
            "cifar10", "images"]
