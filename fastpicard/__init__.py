"""fastpicard: fast fused kernels and solvers for Picard-iterative neural networks."""
from . import _ext
from . import datasets, nn, ops
from .contraction import contractive, jacobian_penalty, lipschitz_estimate
from .graph import Graph
from .ops import higher_order_grads
from .solver import DivergenceError, PicardStats, picard, picard_gcn

__version__ = "0.1.0"

__all__ = [
    "ops", "__version__", "extension_available",
    "picard", "picard_gcn", "PicardStats", "DivergenceError",
    "contractive", "lipschitz_estimate", "jacobian_penalty", "higher_order_grads",
    "Graph", "datasets", "nn",
]


def extension_available() -> bool:
    """True when the compiled kernels loaded (otherwise ops run their pure-torch reference)."""
    return _ext.available

