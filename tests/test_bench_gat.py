"""`python -m fastpicard.bench gat` end to end on a tiny random graph (a smoke test: every
graph, shape, mode and case gets a row with a time and a ratio); no timing asserted."""
import csv

import pytest

from fastpicard.bench.__main__ import main


def test_gat_bench_runs(tmp_path):
    pytest.importorskip("torch_geometric")
    out = tmp_path / "gat.csv"
    main(["gat", "--graphs", "large", "--large-nodes", "300", "--large-edges", "2000",
          "--reps", "3", "--threads", "1", "--device", "cpu", "--csv", str(out)])
    rows = list(csv.DictReader(open(out)))
    got = {(r["shape"], r["mode"], r["case"]) for r in rows}
    assert got == {(s, m, c) for s in ("8x32-mean", "8x8-concat") for m in ("fwd", "fwd+bwd")
                   for c in ("fused", "pyg")}
    for r in rows:
        assert float(r["ms"]) > 0 and float(r["fused_speedup"]) > 0
        assert r["nodes"] == "300" and int(r["edges"]) > 2000 - 10  # + one loop per node
