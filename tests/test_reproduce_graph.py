"""The graph reproductions (``python -m fastpicard.reproduce table5|table1 --quick``): output
structure only (never accuracy levels), plus the fast input layers they rely on."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from fastpicard.reproduce.__main__ import main
from fastpicard.reproduce._graph_common import InputLinear, input_dropout, sparse_features

pytest.importorskip("torch_geometric.nn")
pytest.importorskip("matplotlib")


def load(out):
    runs = json.loads((out / "runs.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    return runs, summary, (out / "table.md").read_text()


def test_table5_quick(tmp_path):
    out = tmp_path / "t5"
    main(["table5", "--quick", "--workers", "1", "--out", str(out),
          "--models", "gcn,gat,itergnn_gcn,pign_gcn,cpign_gcn"])
    runs, summary, md = load(out)
    assert summary["num_runs"] == len(runs["runs"]) and summary["total_seconds"] > 0
    assert runs["machine"]["cores"] >= 1 and runs["table"] == "table5"
    parts = {r["part"] for r in runs["runs"]}
    assert parts == {"table", "curve", "iterations", "speed"}
    table = [r for r in runs["runs"] if r["part"] == "table"]
    assert {(r["dataset"], r["noise"]) for r in table} == {
        ("Cora", 0.0), ("Cora", 0.5), ("CiteSeer", 0.0), ("CiteSeer", 0.5)}
    assert {r["model"] for r in table} == {"gcn", "gat", "itergnn_gcn", "pign_gcn", "cpign_gcn"}
    for r in table:
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["val"] <= 1.0 and r["seconds"] > 0
    assert all(r["fused"] for r in table if r["model"] in ("pign_gcn", "cpign_gcn"))
    speed = [r for r in runs["runs"] if r["part"] == "speed"]
    assert speed and all(r["fused"] and r["ratio"] > 0 for r in speed)
    for paper in ("80.9", "33.2", "71.3", "18.7", "76.7", "43.4"):  # the paper beside ours
        assert paper in md
    assert "Time per model" in md and "Total time" in md and "Command:" in md
    assert (out / "noise_curve.png").stat().st_size > 0
    assert (out / "iterations.png").stat().st_size > 0

    # --resume: an interrupted command's runs are reused, not run again
    main(["table5", "--quick", "--workers", "1", "--out", str(out), "--resume",
          "--models", "gcn,gat,itergnn_gcn,pign_gcn,cpign_gcn", "--parts", "table,curve"])
    again, _, md = load(out)
    trained = [r for r in runs["runs"] if r["part"] != "speed"]  # all kept, none run again
    assert again["runs"] == trained and "reused" in md


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "t1"
    main(["table1", "--quick", "--workers", "1", "--out", str(out), "--backbones", "gcn",
          "--models", "pign"])
    runs, _, _ = load(out)
    main(["table1", "--quick", "--workers", "1", "--out", str(out), "--backbones", "gcn",
          "--models", "pign", "--resume"])
    again, _, md = load(out)
    assert again["runs"] == runs["runs"] and "2 of them were reused" in md
    # --report-only: the missing runs (stacked) are not trained, their cells stay empty
    main(["table1", "--quick", "--workers", "1", "--out", str(out), "--backbones", "gcn",
          "--models", "pign,stacked", "--resume", "--report-only"])
    again, _, md = load(out)
    assert again["runs"] == runs["runs"] and "| GCN | stacked (no iteration) | — | — |" in md
    with pytest.raises(SystemExit, match="hidden=32"):
        main(["table1", "--quick", "--workers", "1", "--out", str(out), "--backbones", "gcn",
              "--models", "pign", "--resume", "--hidden", "16"])


def test_table1_quick_generated_and_lrgb_layout(tmp_path):
    out = tmp_path / "t1"
    main(["table1", "--quick", "--workers", "1", "--out", str(out), "--backbones", "gcn,sage"])
    runs, summary, md = load(out)
    recs = runs["runs"]
    assert {(r["backbone"], r["model"], r["k"]) for r in recs} == {
        (b, m, k) for b in ("gcn", "sage") for m in ("stacked", "itergnn", "pign", "cpign")
        for k in (2, 4)}
    assert all(r["params"] <= 500_000 and r["metric"] == "accuracy" for r in recs)
    assert "0.1831" in md and (out / "accuracy_vs_k.png").stat().st_size > 0

    # the same command on a tiny PascalVOC-SP in PyG's raw layout
    raw = tmp_path / "voc" / "pascalvoc-sp" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test"):
        graphs = [(torch.rand(6, 14, generator=g), torch.rand(8, 2, generator=g),
                   torch.randint(0, 6, (2, 8), generator=g),
                   torch.randint(0, 21, (6,), generator=g)) for _ in range(3)]
        (raw / f"{split}.pickle").write_bytes(pickle.dumps(graphs))
    out = tmp_path / "t1voc"
    main(["table1", "--quick", "--workers", "1", "--out", str(out), "--root",
          str(tmp_path / "voc"), "--layers", "2", "--backbones", "gcn", "--batch-size", "2"])
    runs, _, md = load(out)
    assert {r["metric"] for r in runs["runs"]} == {"macro_f1"}
    assert "PascalVOC-SP" in md and "0.1510" in md


def test_input_linear_matches_linear_dense_and_sparse():
    torch.manual_seed(0)
    x = torch.rand(40, 25, dtype=torch.float64)
    x[x < 0.8] = 0
    for xin in (x, sparse_features(x)):
        lin = InputLinear(25, 6).double()
        ref = torch.nn.Linear(25, 6).double()
        ref.load_state_dict(lin.state_dict())
        g = torch.randn(40, 6, dtype=torch.float64)
        with torch.no_grad():
            lin(xin)  # an evaluation forward: its product is reused below
        (lin(xin) * g).sum().backward()
        (ref(x) * g).sum().backward()
        assert torch.allclose(lin(xin), ref(x))
        assert torch.allclose(lin.weight.grad, ref.weight.grad)
        assert torch.allclose(lin.bias.grad, ref.bias.grad)
        with torch.no_grad():  # changed weights: no stale product
            lin.weight.add_(1.0)
            ref.weight.add_(1.0)
        assert torch.allclose(lin(xin), ref(x))


def test_input_dropout_keeps_expectation_and_zeros():
    torch.manual_seed(0)
    x = torch.rand(300, 50)
    for xin in (x, sparse_features(x)):
        y = input_dropout(xin, 0.6, True)
        y = y.to_dense() if y.layout != torch.strided else y
        kept = (y != 0).float().mean()
        assert abs(float(kept) - 0.4) < 0.02
        assert torch.allclose(y[y != 0], x[y != 0] / 0.4)
        assert input_dropout(xin, 0.6, False) is xin
