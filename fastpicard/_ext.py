"""Loads the compiled extension. If it cannot load (not built, or built against another torch),
fastpicard keeps working on its pure-torch reference ops and says why, once, in plain words."""
from __future__ import annotations

import importlib
import importlib.util
import warnings
from pathlib import Path

import torch  # noqa: F401  (libtorch must be loaded before the extension)


def _source_checkout(pkg: Path) -> bool:
    """Whether pkg is the fastpicard folder of a source checkout (not an installed copy)."""
    return (pkg.parent / "csrc").is_dir() and (pkg.parent / "pyproject.toml").is_file()


def _load():
    """(the _C module, None) or (None, a plain-words reason)."""
    name = f"{__package__}._C"
    pkg = Path(__file__).resolve().parent
    spec = importlib.util.find_spec(name)
    if spec is None:
        if _source_checkout(pkg):
            return None, (
                f"fastpicard was imported from its source folder {pkg}, which holds no compiled "
                "extension (a regular install keeps it in site-packages, and Python started "
                "inside the checkout imports the source folder first). Use an editable install, "
                "which shares its build with the source folder (`bash scripts/setup.sh`, or "
                "`pip install --no-build-isolation -e .`), or start Python outside the checkout")
        return None, (f"the compiled extension (_C) is missing from {pkg}: the package was "
                      "installed without building it; reinstall fastpicard")
    try:
        module = importlib.import_module(name)
    except (ImportError, OSError) as exc:  # a missing symbol: usually another torch's ABI
        return None, (f"the compiled extension {spec.origin} failed to load ({exc}); it was "
                      f"most likely built against another torch than the installed "
                      f"{torch.__version__}: reinstall fastpicard to rebuild it")
    built, running = module.built_with_torch, torch.__version__.split("+")[0]
    if built.split(".")[:2] != running.split(".")[:2]:
        return None, (f"the compiled extension was built against torch {built} but torch "
                      f"{running} is running: reinstall fastpicard to rebuild it")
    return module, None


_C, load_error = _load()  # importing _C registers torch.ops.fastpicard.*
available = _C is not None
if not available:
    warnings.warn(f"fastpicard: ops run on the slower pure-torch reference, because {load_error}",
                  RuntimeWarning, stacklevel=2)
