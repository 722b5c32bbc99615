"""The fuzz suite (tests/fuzz/, see CONTRIBUTING.md): each group runs in a subprocess, so a
crash (a segfault, an abort) fails its group here instead of the whole run, and the case that
was running is reported. Hypothesis is derandomized with fixed example counts: the same
examples on every run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastpicard

HERE = Path(__file__).resolve().parent
GROUPS = ["picard_update", "graph_ops", "control", "graph", "planetoid"]
NEEDS_EXTENSION = {"picard_update", "graph_ops", "control"}


@pytest.mark.parametrize("group", GROUPS)
def test_fuzz(group, tmp_path):
    if group in NEEDS_EXTENSION and not fastpicard.extension_available():
        pytest.skip("the ops' fuzz cases compare the compiled kernels")
    log = tmp_path / "case.txt"
    env = dict(os.environ, FASTPICARD_FUZZ_LOG=str(log))
    # -P: the checkout must not shadow the installed package (CI tests a regular install)
    r = subprocess.run([sys.executable, "-P", "-X", "faulthandler", "-m", "pytest", "-q", "-x",
                        "-p", "no:cacheprovider", str(HERE / "fuzz" / f"fuzz_{group}.py")],
                       cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1200)
    last = log.read_text() if log.exists() else "(none)"
    assert r.returncode == 0, (f"fuzz group {group!r} exited with {r.returncode}; the case "
                               f"running last: {last}\n{r.stdout[-6000:]}\n{r.stderr[-4000:]}")
