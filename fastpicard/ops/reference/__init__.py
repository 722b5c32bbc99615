"""Pure-torch reference implementations of every fastpicard op: the ground truth for tests
and the fallback when the compiled extension is unavailable. Same signatures and outputs as
the ``torch.ops.fastpicard`` ops; differentiable through ordinary autograd."""
from .picard_control import picard_control_
from .picard_update import picard_update

__all__ = ["picard_update", "picard_control_"]
from .spmm import spmm
from .spmm_update import spmm_update

__all__ += ["spmm", "spmm_update"]
