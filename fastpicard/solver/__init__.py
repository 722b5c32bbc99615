"""The Picard fixed-point solver: ``fastpicard.picard`` and its statistics."""
from .gcn import picard_gcn
from .picard import DivergenceError, picard
from .stats import PicardStats

__all__ = ["picard", "picard_gcn", "PicardStats", "DivergenceError"]
