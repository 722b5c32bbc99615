"""Every ```python block of README.md runs as written, each on its own (fresh namespace, in an
empty folder). A block that needs an optional package is skipped when it is not installed."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# what a block uses -> the optional package it needs
OPTIONAL = {"transformers": "transformers", ".plot(": "matplotlib",
            "torch_geometric": "torch_geometric"}


def _blocks():
    if not README.is_file():
        return []
    text = README.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


BLOCKS = _blocks()


def test_readme_has_python_examples():
    if not README.is_file():
        pytest.skip("README.md is not beside the tests (not a source checkout)")
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_readme_example_runs(line, code, tmp_path, monkeypatch):
    for marker, package in OPTIONAL.items():
        if marker in code:
            pytest.importorskip(package, reason=f"the example needs {package} "
                                                f"(pip install {package})")
    if ".plot(" in code:
        import matplotlib
        matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # an example may write a file
    exec(compile(code, f"README.md, the example at line {line}", "exec"), {"__name__": "__main__"})
