"""The main job, ``python -m fastpicard.train``: option errors, --out, the printed convergence."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastpicard
from fastpicard import train
from fastpicard.nn import PIGN

REPO = Path(__file__).resolve().parents[1]

BAD = [
    (["--alpha", "2"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
    (["--dataset", "Foo"], "--dataset"),
    (["--dataset", "PubMed"], "--root"),
    (["--root", "/no/such/folder"], "--root"),
    (["--threads", "-2"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--device", "foo"], "--device"),
    (["--device", "meta"], "--device"),
    (["--epochs", "0"], "--epochs"),
    (["--dropout", "1"], "--dropout"),
    (["--tol", "0"], "--tol"),
    (["--lr", "x"], "--lr"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "--device"))


@pytest.mark.parametrize("argv,names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_is_one_line_and_exit_2(argv, names, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--epochs", "1", "--no-progress"] + argv)  # argv's options win
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("python -m fastpicard.train: error: ") and names in err


def test_root_without_the_files_names_root(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--root", str(tmp_path), "--epochs", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--root" in err


def test_out_writes_metrics_plots_and_weights(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    model = train.main(["--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "8",
                        "--tol", "1e-3", "--iterations", "3"])
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "metrics.json", "model.pt",
                                                     "residuals.png"]  # no temporary files
    record = json.loads((out / "metrics.json").read_text())
    assert record["settings"]["epochs"] == 2 and record["settings"]["tol"] == 1e-3
    assert record["dataset"]["name"] == "Cora" and len(record["history"]["loss"]) == 2
    assert record["environment"]["compiled_extension"] == fastpicard.extension_available()
    m = record["metrics"]
    assert 0 <= m["test_accuracy"] <= 1 and m["eval_iterations"] <= 3
    # the printed convergence line agrees with the record
    assert ("tolerance 0.001 (abs residual) reached" in printed) == m["tol_reached"]
    assert ("NOT reached in 3 steps" in printed) == (not m["tol_reached"])
    for png in ("curves.png", "residuals.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fresh = PIGN(1433, 8, 7, max_iter=3)
    fresh.load_state_dict(torch.load(out / "model.pt"))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_fixed_schedule_explains_the_residual(capsys):
    train.main(["--epochs", "1", "--no-progress", "--hidden", "8"])
    printed = capsys.readouterr().out
    assert "last-step residual" in printed and "how much the last Picard step" in printed
    assert "fixed schedule of 2 steps" in printed


def test_module_from_the_checkout_uses_the_build():
    """`python -m fastpicard.train` started in the checkout: with the editable install (what
    scripts/setup.sh makes) the source folder is the package and loads the compiled extension;
    with a regular install the source folder shadows it and the warning says so plainly."""
    if not (REPO / "fastpicard" / "train.py").is_file():
        pytest.skip("not run from a source checkout")
    code = ("import warnings, fastpicard, sys\n"
            "print(fastpicard.extension_available(), fastpicard.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    available, where = r.stdout.split()
    assert Path(where).resolve().parent == REPO / "fastpicard"  # the checkout shadows or is it
    installed_here = Path(fastpicard.__file__).resolve().parent == REPO / "fastpicard"
    if installed_here and fastpicard.extension_available():  # editable
        assert available == "True" and "fastpicard:" not in r.stderr
    else:  # regular install, tested from elsewhere: the shadowing copy says why, plainly
        assert available == "False" and "source folder" in r.stderr
        assert "circular import" not in r.stderr
