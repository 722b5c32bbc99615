"""PicardStats.plot: returns the Figure, saves with path=, and the picture fits its canvas."""
import pytest
import torch

from fastpicard import picard

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


def _inside(fig, artist):
    fig.canvas.draw()
    box, canvas = artist.get_window_extent(), fig.bbox
    return (box.x0 >= canvas.x0 and box.x1 <= canvas.x1 and box.y0 >= canvas.y0
            and box.y1 <= canvas.y1)


def test_long_title_fits_and_path_saves(tmp_path):
    fn = lambda x: 0.5 * torch.tanh(x) + 1  # noqa: E731
    x, st = picard(fn, torch.zeros(40, 3), batch="leading", tol=1e-6)
    st.estimate_lipschitz(fn, x)  # the longest summary: with the Lipschitz estimate
    fig = st.plot(path=tmp_path / "r.png", max_samples=5)
    assert isinstance(fig, mpl.figure.Figure) and (tmp_path / "r.png").stat().st_size > 0
    ax, = fig.axes
    assert len(ax.get_lines()) == 5 + 1  # five samples and the tolerance
    assert _inside(fig, ax.title) and _inside(fig, ax.xaxis.label)
    assert _inside(fig, ax.yaxis.label)
    plt.close(fig)


def test_fixed_schedule_draws_no_tolerance_and_uses_the_given_axes():
    from fastpicard.nn import PIGN

    model = PIGN(3, 4, 2, max_iter=3, dropout=0.0)  # tol=None: the fixed schedule, tol 0
    model(torch.randn(5, 3), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    fig, (a, b) = plt.subplots(1, 2)
    assert model.last_stats.plot(ax=b) is fig
    assert not a.get_lines() and len(b.get_lines()) == 1 and b.get_legend() is None
    plt.close(fig)
