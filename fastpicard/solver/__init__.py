"""The Picard fixed-point solver: ``fastpicard.picard`` and its statistics."""
from .picard import DivergenceError, picard
from .stats import PicardStats

__all__ = ["picard", "PicardStats", "DivergenceError"]
