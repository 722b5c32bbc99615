"""fastpicard: fast fused kernels and solvers for Picard-iterative neural networks."""
from . import _ext
from . import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__", "extension_available"]


def extension_available() -> bool:
    """True when the compiled kernels loaded (otherwise ops run their pure-torch reference)."""
    return _ext.available

from .solver import DivergenceError, PicardStats, picard  # noqa: E402

__all__ += ["picard", "PicardStats", "DivergenceError"]
from . import datasets, nn  # noqa: E402  (issue 5: modules and datasets)

__all__ += ["datasets", "nn"]
