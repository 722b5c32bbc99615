"""2-D Navier–Stokes vorticity data in the setting of the FNO benchmark (Li et al. 2021).

    ∂w/∂t + u·∇w = ν Δw + f,   ∇·u = 0,   w = ∇×u   on the unit torus [0, 1)²,
    f(x, y) = 0.1 (sin 2π(x+y) + cos 2π(x+y)),   w(·, 0) ~ GRF(α=2.5, τ=7),

solved pseudo-spectrally: the stream function from -Δψ = w, velocity u = (∂ψ/∂y, -∂ψ/∂x), the
advection term evaluated on the grid with 2/3-rule dealiasing and stepped explicitly, viscosity
and forcing by Crank–Nicolson. The record is FNO's file layout: ``a`` [N, S, S] (w at t=0),
``u`` [N, S, S, T] (w at t = 1, …, T), ``t`` [T]. Generated data are cached on disk; FNO's own
files (``.mat`` v5 or v7.3, ``.npz``) are read through the same function.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = 1  # bump when the solver changes, so stale cache files are not reused


@dataclass
class NavierStokesData:
    """``a`` [N, S, S] initial vorticity, ``u`` [N, S, S, T] vorticity at times ``t`` [T]
    (float32 tensors, FNO's layout)."""

    a: torch.Tensor
    u: torch.Tensor
    t: torch.Tensor

    def __len__(self) -> int:
        return self.a.shape[0]

    def __repr__(self) -> str:
        n, s, _, t = self.u.shape
        return f"NavierStokesData(N={n}, S={s}, T={t})"


# ---------------------------------------------------------------- the solver
def _wavenumbers(s: int, device):
    k = torch.fft.fftfreq(s, 1.0 / s, device=device, dtype=torch.float64)  # 0..s/2-1, -s/2..-1
    kx = k.view(s, 1).expand(s, s // 2 + 1)  # first index: x
    ky = torch.fft.rfftfreq(s, 1.0 / s, device=device, dtype=torch.float64).view(1, -1).expand(s, -1)
    return kx, ky


def gaussian_random_field(n: int, s: int, *, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None,
                          dtype=torch.float64) -> torch.Tensor:
    """n samples [n, s, s] of the periodic GRF with covariance σ²(4π²|k|² + τ²)^(-α), zero mean
    mode, σ = τ^(α - 1) (FNO's initial vorticity for α=2.5, τ=7)."""
    sigma = tau ** (0.5 * (2 * alpha - 2))
    k = torch.fft.fftfreq(s, 1.0 / s, dtype=torch.float64)
    k2 = k.view(-1, 1) ** 2 + k.view(1, -1) ** 2
    sqrt_eig = s * s * math.sqrt(2.0) * sigma * (4 * math.pi ** 2 * k2 + tau ** 2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    xi = torch.randn(n, s, s, 2, generator=generator, dtype=torch.float64)
    coeff = torch.complex(xi[..., 0], xi[..., 1]) * sqrt_eig
    return torch.fft.ifft2(coeff).real.to(dtype)


def default_forcing(s: int, dtype=torch.float64) -> torch.Tensor:
    """0.1 (sin 2π(x+y) + cos 2π(x+y)) on the s×s grid x, y ∈ {0, 1/s, …}."""
    x = torch.arange(s, dtype=torch.float64) / s
    xy = x.view(-1, 1) + x.view(1, -1)
    return (0.1 * (torch.sin(2 * math.pi * xy) + torch.cos(2 * math.pi * xy))).to(dtype)


def solve_vorticity(w0: torch.Tensor, forcing: torch.Tensor | None, visc: float,
                    record_times, delta_t: float) -> torch.Tensor:
    """Integrates w0 [B, S, S] and returns w at each of ``record_times`` as [B, S, S, len].

    Times must be positive multiples of ``delta_t`` (up to rounding) in increasing order.
    """
    b, s, s2 = w0.shape
    if s != s2 or s % 2:
        raise ValueError(f"solve_vorticity: w0 must be [B, S, S] with S even, got {tuple(w0.shape)}")
    steps = [round(float(t) / delta_t) for t in record_times]
    if any(n <= 0 or abs(n * delta_t - float(t)) > 1e-6 * max(1.0, float(t))
           for n, t in zip(steps, record_times)) or steps != sorted(set(steps)):
        raise ValueError("solve_vorticity: record_times must be increasing positive multiples of "
                         f"delta_t={delta_t}, got {list(record_times)}")
    kx, ky = _wavenumbers(s, w0.device)
    lap = 4 * math.pi ** 2 * (kx ** 2 + ky ** 2)
    inv_lap = torch.where(lap > 0, 1.0 / lap.clamp_min(1e-30), torch.zeros_like(lap))
    cut = 2.0 / 3.0 * (s // 2)
    dealias = ((kx.abs() <= cut) & (ky.abs() <= cut)).to(w0.dtype)
    dx, dy = 2j * math.pi * kx, 2j * math.pi * ky
    half = 0.5 * delta_t * visc * lap
    lhs, rhs = 1.0 / (1.0 + half), 1.0 - half
    w_h = torch.fft.rfft2(w0)
    f_h = torch.zeros_like(w_h) if forcing is None else torch.fft.rfft2(
        forcing.to(w0.dtype)).expand_as(w_h)
    out = torch.empty(b, s, s, len(steps), dtype=w0.dtype, device=w0.device)
    n, k = 0, 0
    while k < len(steps):
        psi_h = w_h * inv_lap
        grads = torch.fft.irfft2(torch.stack([dy * psi_h, -dx * psi_h, dx * w_h, dy * w_h]),
                                 s=(s, s))
        adv_h = torch.fft.rfft2(grads[0] * grads[2] + grads[1] * grads[3]) * dealias
        w_h = (rhs * w_h + delta_t * (f_h - adv_h)) * lhs
        n += 1
        if n == steps[k]:
            out[..., k] = torch.fft.irfft2(w_h, s=(s, s))
            k += 1
    return out


# ---------------------------------------------------------------- cache and readers
def default_cache_dir() -> Path:
    """``$FASTPICARD_CACHE``, else ``$XDG_CACHE_HOME/fastpicard``, else ~/.cache/fastpicard."""
    if os.environ.get("FASTPICARD_CACHE"):
        return Path(os.environ["FASTPICARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastpicard"


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half
    except BaseException:
        os.unlink(tmp)
        raise


def _as_numeric(name, arr, path):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"navier_stokes: {path}: '{name}' must be a real numeric array, got "
                         f"dtype {arr.dtype}")
    return arr


def _validated(a, u, t, path, n) -> NavierStokesData:
    if u.ndim != 4 or u.shape[1] != u.shape[2]:
        raise ValueError(f"navier_stokes: {path}: 'u' must be [N, S, S, T], got shape {u.shape}")
    big_n, s, _, steps = u.shape
    if a is None:
        raise ValueError(f"navier_stokes: {path}: no 'a' array (initial vorticity [N, S, S])")
    if a.shape != (big_n, s, s):
        raise ValueError(f"navier_stokes: {path}: 'a' must be [N, S, S] = {(big_n, s, s)} to "
                         f"match 'u' {u.shape}, got {a.shape}")
    if t is None:
        t = np.arange(1, steps + 1, dtype=np.float64)
    elif t.size != steps or (t.ndim > 1 and max(t.shape) != t.size):
        raise ValueError(f"navier_stokes: {path}: 't' must hold T={steps} times, got shape "
                         f"{t.shape}")
    if n is not None and n > big_n:
        raise ValueError(f"navier_stokes: {path} holds {big_n} samples, asked for n={n}")
    keep = slice(None) if n is None else slice(0, n)
    out = NavierStokesData(torch.from_numpy(np.ascontiguousarray(a[keep], dtype=np.float32)),
                           torch.from_numpy(np.ascontiguousarray(u[keep], dtype=np.float32)),
                           torch.from_numpy(np.asarray(t, dtype=np.float32).reshape(-1)))
    if not (torch.isfinite(out.a).all() and torch.isfinite(out.u).all()):
        raise ValueError(f"navier_stokes: {path}: non-finite values in 'a' or 'u'")
    return out


def _read_npz(path: Path, n):
    try:
        with np.load(path, allow_pickle=False) as z:  # no object arrays, ever
            missing = {"a", "u"} - set(z.files)
            if missing:
                raise ValueError(f"navier_stokes: {path}: missing array(s) {sorted(missing)}")
            arrays = {k: _as_numeric(k, z[k], path) for k in ("a", "u", "t") if k in z.files}
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"navier_stokes: cannot read {path}: {e}") from e
    except (OSError, EOFError) as e:  # truncated or not a zip file
        raise ValueError(f"navier_stokes: cannot read {path}: {e}") from e
    return _validated(arrays["a"], arrays["u"], arrays.get("t"), path, n)


def _read_mat_v73(path: Path, n):
    try:
        import h5py
    except ImportError as e:
        raise ImportError(f"navier_stokes: {path} is a MATLAB v7.3 (HDF5) file; reading it "
                          "needs h5py (pip install h5py)") from e
    with h5py.File(path, "r") as f:
        arrays = {}
        for name in ("a", "u", "t"):
            if name not in f:
                continue
            ds = f[name]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
                raise ValueError(f"navier_stokes: {path}: '{name}' must be a real numeric "
                                 f"dataset, got {ds!r}")
            # MATLAB writes column-major: on disk the axes are reversed ([T, S, S, N] for u);
            # read only the first n samples (the last disk axis)
            if name != "t" and n is not None and ds.ndim >= 1:
                if n > ds.shape[-1]:
                    raise ValueError(f"navier_stokes: {path} holds {ds.shape[-1]} samples, "
                                     f"asked for n={n}")
                data = ds[..., :n]
            else:
                data = ds[()]
            arrays[name] = np.asarray(data).transpose()
        if "u" not in arrays:
            raise ValueError(f"navier_stokes: {path}: no 'u' dataset")
    return _validated(arrays.get("a"), arrays["u"], arrays.get("t"), path, n)


def _read_mat(path: Path, n):
    with open(path, "rb") as f:
        head = f.read(520)
    if head[512:520] == b"\x89HDF\r\n\x1a\n" or head[:8] == b"\x89HDF\r\n\x1a\n":
        return _read_mat_v73(path, n)
    try:
        import scipy.io
    except ImportError as e:
        raise ImportError(f"navier_stokes: reading {path} (MATLAB v5) needs scipy "
                          "(pip install scipy)") from e
    try:
        m = scipy.io.loadmat(path, variable_names=["a", "u", "t"])
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"navier_stokes: cannot read {path} as a MATLAB file: {e}") from e
    if "u" not in m:
        raise ValueError(f"navier_stokes: {path}: no 'u' variable")
    arrays = {k: _as_numeric(k, m[k], path) for k in ("a", "u", "t") if k in m}
    return _validated(arrays.get("a"), arrays["u"], arrays.get("t"), path, n)


def read_navier_stokes(path, n: int | None = None) -> NavierStokesData:
    """Reads FNO's layout (``a`` [N,S,S], ``u`` [N,S,S,T], ``t``) from ``.mat`` or ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"navier_stokes: no such file {str(path)!r}")
    if path.suffix == ".npz":
        return _read_npz(path, n)
    if path.suffix == ".mat":
        return _read_mat(path, n)
    raise ValueError(f"navier_stokes: {path}: expected a .mat or .npz file")


def navier_stokes(n: int = 1200, *, resolution: int = 64, steps: int = 20, visc: float = 1e-3,
                  delta_t: float = 1e-3, seed: int = 0, path=None, cache_dir=None,
                  batch_size: int = 100, progress: bool = True) -> NavierStokesData:
    """Navier–Stokes vorticity trajectories in FNO's layout.

    With ``path`` (a FNO ``.mat`` file such as ``ns_V1e-3_N5000_T50.mat``, v5 or v7.3, or an
    ``.npz`` with arrays ``a``, ``u``, ``t``) the file is read, its first ``n`` samples (all
    with ``n=None``); the solver arguments are then unused. Otherwise ``n`` trajectories are
    generated on a ``resolution``² grid and recorded at t = 1, …, ``steps`` (viscosity
    ``visc``, time step ``delta_t``: FNO used 1e-4, ten times the cost of the default, whose
    answer differs from it by under 1e-4 relative L2 at 64², t ≤ 2), reproducibly from ``seed``, and cached in
    ``cache_dir`` (default :func:`default_cache_dir`) under a name made from every argument.
    """
    if path is not None:
        return read_navier_stokes(path, n)
    for name, v in (("n", n), ("resolution", resolution), ("steps", steps),
                    ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"navier_stokes: {name} must be a positive int, got {v!r}")
    if resolution % 2:
        raise ValueError(f"navier_stokes: resolution must be even, got {resolution}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
               for v in (visc, delta_t)) or abs(round(1 / delta_t) * delta_t - 1) > 1e-9:
        raise ValueError(f"navier_stokes: visc must be > 0 and 1/delta_t an integer, got "
                         f"visc={visc}, delta_t={delta_t}")
    key = dict(format=FORMAT, n=n, resolution=resolution, steps=steps, visc=visc,
               delta_t=delta_t, seed=seed, alpha=2.5, tau=7.0)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    file = Path(cache_dir or default_cache_dir()) / (
        f"ns_V{visc:g}_N{n}_S{resolution}_T{steps}_{digest}.npz")
    if file.is_file():
        return _read_npz(file, None)
    g = torch.Generator().manual_seed(seed)
    a = gaussian_random_field(n, resolution, generator=g)
    f = default_forcing(resolution)
    times = list(range(1, steps + 1))
    chunks = range(0, n, batch_size)
    if progress:
        from ..reproduce.report import progress as bar

        chunks = bar(chunks, desc=f"Navier-Stokes {n}x{resolution}²x{steps}", unit="batch")
    u = torch.cat([solve_vorticity(a[i:i + batch_size], f, visc, times, delta_t)
                   for i in chunks])
    _atomic_savez(file, a=a.float().numpy(), u=u.float().numpy(),
                  t=np.asarray(times, dtype=np.float32))
    return _read_npz(file, None)
