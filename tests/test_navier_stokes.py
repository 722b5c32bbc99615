"""fastpicard.datasets.navier_stokes: the solver against what physics guarantees, the cache, and
the readers of FNO's file layout (.npz, .mat v5, .mat v7.3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastpicard.datasets import navier_stokes, read_navier_stokes
from fastpicard.datasets.navier_stokes import (default_forcing, gaussian_random_field,
                                               solve_vorticity)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    # tiny FFTs: threads only add overhead (10x slower on a busy 2-core machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def grid(s):
    x = torch.arange(s, dtype=F64) / s
    return torch.meshgrid(x, x, indexing="ij")


def test_single_wavenumber_decays_at_the_viscous_rate():
    """Modes of one |k| are a steady Euler solution (u·∇w = 0): with zero forcing the vorticity
    decays exactly as exp(-4π²|k|²νt). The mix of (1,1), (1,-1) and a product of sines fails
    if a velocity component has the wrong sign (the advection term would not vanish)."""
    x, y = grid(32)
    w0 = (torch.sin(2 * math.pi * (x + y)) + 0.5 * torch.cos(2 * math.pi * (x - y))
          + torch.sin(2 * math.pi * x) * torch.sin(2 * math.pi * y)).unsqueeze(0)
    visc = 1e-2
    out = solve_vorticity(w0, None, visc, [0.5, 1.0], 1e-2)
    for i, t in enumerate((0.5, 1.0)):
        exact = w0[0] * math.exp(-visc * 4 * math.pi ** 2 * 2 * t)
        torch.testing.assert_close(out[0, ..., i], exact, rtol=0, atol=2e-5)  # CN: O(dt²)
    # while a field of two wavenumbers is advected (the nonlinear term is live)
    w1 = (torch.sin(2 * math.pi * x) + torch.cos(4 * math.pi * y)).unsqueeze(0)
    moved = solve_vorticity(w1, None, 1e-12, [0.2], 1e-2)[0, ..., 0]
    assert (moved - w1[0]).abs().max() > 1e-2


def forced_run(s, dt, t=1.0):
    x, y = grid(s)
    # band-limited start: the same function on every grid
    w0 = (torch.sin(2 * math.pi * x) * torch.cos(4 * math.pi * y) + 0.8 * torch.cos(
        2 * math.pi * (x + 2 * y)) + 0.5 * torch.sin(6 * math.pi * y)).unsqueeze(0)
    return solve_vorticity(w0, default_forcing(s), 1e-3, [t], dt)[0, ..., 0]


def test_time_convergence_first_order():
    """Explicit advection with Crank–Nicolson diffusion: the error against a fine step halves
    with the step (first order)."""
    ref = forced_run(16, 1e-3, t=0.5)
    errs = [float((forced_run(16, dt, t=0.5) - ref).abs().max()) for dt in (5e-2, 2.5e-2, 1.25e-2)]
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(1.6 < r < 2.6 for r in ratios), (errs, ratios)


def test_space_convergence():
    """Pseudo-spectral: the error against a fine grid (compared at the coarse points) falls
    fast as the grid is refined."""
    ref = forced_run(96, 2e-2, t=0.5)
    errs = []
    for s in (12, 24, 48):
        errs.append(float((forced_run(s, 2e-2, t=0.5) - ref[:: 96 // s, :: 96 // s]).abs().max()))
    assert errs[0] > 4 * errs[1] > 0 and errs[1] > 4 * errs[2], errs


def test_gaussian_random_field_statistics():
    """Zero mean mode, and the variance 2σ² Σ_k (4π²|k|² + τ²)^(-α) of the GRF's spectrum."""
    s, alpha, tau = 16, 2.5, 7.0
    a = gaussian_random_field(4000, s, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4000, s, s)
    torch.testing.assert_close(a.mean((1, 2)), torch.zeros(4000, dtype=F64), atol=1e-12, rtol=0)
    k = torch.fft.fftfreq(s, 1.0 / s, dtype=F64)
    lam = (4 * math.pi ** 2 * (k.view(-1, 1) ** 2 + k.view(1, -1) ** 2) + tau ** 2) ** (-alpha)
    lam[0, 0] = 0
    want = 2 * tau ** (2 * alpha - 2) * float(lam.sum())
    assert abs(float(a.var()) / want - 1) < 0.05


def test_generator_cache_and_layout(tmp_path):
    d = navier_stokes(3, resolution=8, steps=2, delta_t=0.1, cache_dir=tmp_path, progress=False)
    assert d.a.shape == (3, 8, 8) and d.u.shape == (3, 8, 8, 2) and d.t.tolist() == [1.0, 2.0]
    assert d.a.dtype == d.u.dtype == torch.float32
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temp file left behind
    again = navier_stokes(3, resolution=8, steps=2, delta_t=0.1, cache_dir=tmp_path)
    assert torch.equal(again.u, d.u)
    other = navier_stokes(3, resolution=8, steps=2, delta_t=0.1, seed=1, cache_dir=tmp_path,
                          progress=False)
    assert not torch.equal(other.a, d.a) and len(list(tmp_path.iterdir())) == 2
    # the record is the solver's answer from a
    u = solve_vorticity(d.a.double(), default_forcing(8), 1e-3, [1.0, 2.0], 0.1)
    torch.testing.assert_close(d.u, u.float(), rtol=1e-5, atol=1e-5)
    for kw, match in [(dict(resolution=7), "even"), (dict(n=0), "n must"),
                      (dict(delta_t=0.3), "delta_t"), (dict(steps=1.5), "steps"),
                      (dict(visc="1e-3"), "visc")]:
        with pytest.raises(ValueError, match=match):
            navier_stokes(**{"n": 2, "resolution": 8, "steps": 2, "cache_dir": tmp_path, **kw})


def fno_arrays(n=4, s=6, t=5):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, s, s)).astype(np.float32),
            rng.standard_normal((n, s, s, t)).astype(np.float32),
            np.arange(1, t + 1, dtype=np.float64).reshape(1, t))


def check_read(d, a, u, n=None):
    keep = slice(None) if n is None else slice(0, n)
    assert torch.equal(d.a, torch.from_numpy(a[keep])) and torch.equal(d.u, torch.from_numpy(u[keep]))
    assert d.t.tolist() == list(range(1, u.shape[-1] + 1))


def test_read_npz_and_its_checks(tmp_path):
    a, u, t = fno_arrays()
    p = tmp_path / "ns.npz"
    np.savez(p, a=a, u=u, t=t)
    check_read(navier_stokes(path=p, n=None), a, u)
    check_read(navier_stokes(2, path=p), a, u, 2)
    bad = [("objects", dict(a=np.array([object()] * 4), u=u), "allow_pickle|object|numeric"),
           ("shape", dict(a=a[:, :5], u=u), "'a' must be"),
           ("u3d", dict(a=a, u=u[..., 0]), "'u' must be"),
           ("t", dict(a=a, u=u, t=np.arange(3.0)), "'t' must hold"),
           ("nan", dict(a=a, u=np.full_like(u, np.nan)), "non-finite"),
           ("missing", dict(u=u), "missing")]
    for name, arrays, match in bad:
        q = tmp_path / f"{name}.npz"
        np.savez(q, **arrays)
        with pytest.raises(ValueError, match=match) as e:
            read_navier_stokes(q)
        assert f"{name}.npz" in str(e.value)
    with pytest.raises(ValueError, match="holds 4 samples"):
        read_navier_stokes(p, n=9)
    with pytest.raises(FileNotFoundError):
        read_navier_stokes(tmp_path / "none.mat")
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.mat or \.npz"):
        read_navier_stokes(tmp_path / "x.h5")


def test_read_mat_v5(tmp_path):
    sio = pytest.importorskip("scipy.io")
    a, u, t = fno_arrays()
    p = tmp_path / "ns_v5.mat"
    sio.savemat(p, {"a": a, "u": u, "t": t})
    check_read(navier_stokes(path=p, n=None), a, u)
    sio.savemat(tmp_path / "cells.mat", {"a": a, "u": np.array([[1, "x"]], dtype=object)})
    with pytest.raises(ValueError, match="cells.mat.*'u' must be a real numeric"):
        read_navier_stokes(tmp_path / "cells.mat")
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(ValueError, match="junk.mat"):
        read_navier_stokes(tmp_path / "junk.mat")


def test_read_mat_v73(tmp_path):
    """MATLAB v7.3: HDF5 behind a 512-byte header, arrays stored column-major (axes reversed
    on disk, as h5py sees them): what FNO's MatReader reads."""
    h5py = pytest.importorskip("h5py")
    a, u, t = fno_arrays()
    p = tmp_path / "ns_V1e-3_N4_T5.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["a"], f["u"], f["t"] = a.T, u.T, t.T
    with open(p, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                b"HDF5 schema 1.00 .")
    check_read(navier_stokes(path=p, n=None), a, u)
    check_read(navier_stokes(3, path=p), a, u, 3)
    q = tmp_path / "strings.mat"
    with h5py.File(q, "w", userblock_size=512) as f:
        f["a"] = a.T
        f["u"] = np.array([b"x"] * 3)
    with pytest.raises(ValueError, match="strings.mat.*'u' must be a real numeric"):
        read_navier_stokes(q)
