"""Datasets: Planetoid citation graphs (Cora and CiteSeer embedded, no download) and the
paper's drop-in feature noise."""
from .noise import dropin_noise
from .planetoid import GraphData, planetoid, row_normalize

__all__ = ["planetoid", "dropin_noise", "row_normalize", "GraphData"]
# Navier-Stokes vorticity (generated, or FNO's files) and image sets from their original files
from .images import cifar10, fashion_mnist, images
from .navier_stokes import NavierStokesData, navier_stokes, read_navier_stokes

__all__ += ["navier_stokes", "read_navier_stokes", "NavierStokesData", "fashion_mnist",
            "cifar10", "images"]
