"""The models benchmark's tol part runs (a smoke run, no timing asserted)."""
from __future__ import annotations

import argparse

import pytest

pytest.importorskip("torch_geometric")


def test_tol_part_runs_every_variant_for_the_same_steps(capsys):
    from fastpicard.bench import models

    p = argparse.ArgumentParser()
    models.add_arguments(p)
    args = p.parse_args(["--datasets", "Cora", "--hidden", "8", "--iterations", "2",
                         "--reps", "1"])
    rows = models.run_tol(args, "cpu")
    assert {(r["what"], r["case"]) for r in rows} == {
        (w, c) for w in ("epoch", "forward") for c in ("fixed", "tol_cpp_loop", "tol_generic")}
    assert all(r["iters"] == 2 for r in rows)
    assert all(r["returned"] == 2 for r in rows)  # the same iterate: a fair per-step ratio
    assert "tol_cpp_loop" in capsys.readouterr().out
