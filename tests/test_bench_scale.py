"""`python -m fastpicard.bench scale` end to end on tiny graphs (a smoke test: rows, columns,
the lean mode, a Planetoid graph through fastpicard.datasets, the plot); no timing asserted."""
import csv

import pytest

import fastpicard
from fastpicard.bench.__main__ import main

pytestmark = pytest.mark.skipif(not fastpicard.extension_available(),
                                reason="compiled extension not available")


def test_scale_bench_runs(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "scale.csv", tmp_path / "scale.png"
    main(["scale", "--sizes", "300,600", "--lean-above", "400", "--graphs", "powerlaw,Cora",
          "--block", "100", "--orders", "none,cluster", "--reps", "1", "--threads", "1",
          "--csv", str(out), "--plot", str(png)])
    rows = list(csv.DictReader(open(out)))
    got = {(r["graph"], int(r["nodes"]), r["order"]) for r in rows}
    assert got == {(g, n, o) for g, n in (("powerlaw", 300), ("powerlaw", 600), ("Cora", 2708))
                   for o in ("none", "cluster")}
    for r in rows:
        assert float(r["ns_per_entry"]) > 0 and float(r["build_ms"]) > 0
        assert float(r["graph_bytes_per_entry"]) > 0 and float(r["peak_mib"]) > 0
        if r["graph"] != "Cora":  # lean rows (600 nodes) too: ratio to the smallest graph
            assert float(r["vs_smallest"]) > 0
    assert png.stat().st_size > 0
