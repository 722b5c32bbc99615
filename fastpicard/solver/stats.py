"""What a solve reports: per-sample iterations, residuals, flags and the residual trace."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PicardStats:
    """Per-sample outcome of :func:`fastpicard.picard` (all tensors on CPU).

    Attributes:
        iterations: int64 [S], update steps each sample took (frozen steps not counted).
        abs_residual: [S], ``||x_{k+1} - x_k||`` of the step that produced the returned iterate
            (for a diverged sample: the residual that flagged it).
        rel_residual: [S], the same divided by ``||x_{k+1}||``.
        trace: [steps, S], the stopping residual (abs or rel, per ``stop``) of every step;
            NaN where a sample was already stopped.
        converged, diverged: bool [S]. A sample that is neither ran out of iterations and
            returns its lowest-residual iterate.
        time: wall-clock seconds of the forward solve.
        steps: loop steps run (fn evaluations); on CUDA up to ``check_every - 1`` more than
            ``iterations.max()``, spent on frozen samples without changing them.
        stop: "abs" or "rel", the criterion the trace holds.
        backward: stats of the adjoint solve (``backward="implicit"``), set once backward ran.
        lipschitz: set by :meth:`estimate_lipschitz`.
    """

    iterations: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    trace: torch.Tensor = field(repr=False)
    converged: torch.Tensor
    diverged: torch.Tensor
    time: float
    steps: int
    stop: str = "abs"
    tol: float = 0.0
    backward: "PicardStats | None" = field(default=None, repr=False)
    lipschitz: float | None = None

    def estimate_lipschitz(self, fn, x, **kw) -> float:
        """Local Lipschitz constant of fn at x (usually the returned x_star), via
        :func:`fastpicard.lipschitz_estimate`; stored in ``self.lipschitz`` and the summary."""
        from ..contraction import lipschitz_estimate

        self.lipschitz = lipschitz_estimate(fn, x, **kw)
        return self.lipschitz

    @property
    def num_samples(self) -> int:
        return int(self.converged.numel())

    def summary(self) -> str:
        """One line: samples converged/diverged, iterations, worst final residual, time."""
        s = self.num_samples
        it = self.iterations
        res = self.rel_residual if self.stop == "rel" else self.abs_residual
        finite = res[torch.isfinite(res)]
        worst = f"{float(finite.max()):.3g}" if finite.numel() else "nan"
        iters = (f"{int(it.min())}..{int(it.max())} (mean {float(it.double().mean()):.1f})"
                 if s > 1 else (str(int(it[0])) if s else "0"))
        return (f"picard: {int(self.converged.sum())}/{s} converged, "
                f"{int(self.diverged.sum())} diverged, iterations {iters}, "
                f"max {self.stop} residual {worst} (tol {self.tol:g}), "
                f"{self.steps} steps in {self.time * 1e3:.2f} ms"
                + (f", Lipschitz ~{self.lipschitz:.3g}" if self.lipschitz is not None else ""))

    def plot(self, ax=None, max_samples: int = 32, path=None):
        """Residual traces on a log scale (one line per sample, up to ``max_samples``; diverged
        samples in red) and the tolerance. Draws into ``ax`` if given, else a new figure;
        ``path`` also saves it (PNG, PDF, ... by the suffix). Returns the Figure (in a script:
        ``stats.plot(path="residuals.png")``, or ``plt.show()`` after it). Needs matplotlib."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:  # optional dependency
            raise ImportError("PicardStats.plot needs matplotlib (pip install matplotlib)") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
        trace = self.trace.double()
        steps = torch.arange(1, trace.shape[0] + 1)
        for s in range(min(self.num_samples, max_samples)):
            col = trace[:, s]
            ok = torch.isfinite(col) & (col > 0)
            ax.plot(steps[ok].tolist(), col[ok].tolist(), lw=1, marker="." if ok.sum() < 20
                    else None, color="C3" if bool(self.diverged[s]) else None)
        if self.tol > 0:  # the fixed schedule has none
            ax.axhline(self.tol, color="k", ls="--", lw=0.8, label=f"tol {self.tol:g}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{self.stop} residual")
        ax.xaxis.get_major_locator().set_params(integer=True)
        # the summary, wrapped onto two lines so that it fits the axes' width
        head, _, tail = self.summary().replace("picard: ", "").partition(", max ")
        ax.set_title(f"{head}\nmax {tail}" if tail else head, fontsize=8)
        if path is not None:
            ax.figure.savefig(path)
        return ax.figure
