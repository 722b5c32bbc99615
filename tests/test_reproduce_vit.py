"""python -m fastpicard.reproduce table2/3/4 --quick: the outputs' structure (never error levels),
the FNO file route, and the training loop under torchrun with 2 CPU ranks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fastpicard.reproduce.__main__ import main
from test_images import cifar_batch, fashion_files


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def outputs(out, table, models, iters, seeds, pngs=("mse_vs_iterations.png", "prediction.png")):
    runs = json.loads((out / "runs.json").read_text())
    assert runs["table"] == table and "machine" in runs and runs["settings"]["quick"]
    cells = sorted((r["model"], r["iterations"], r["seed"]) for r in runs["runs"])
    assert cells == sorted((m, k, s) for m in models for k in iters for s in range(seeds))
    for r in runs["runs"]:
        assert np.isfinite(r["mse"]) and np.isfinite(r["rel_l2"]) and r["world_size"] == 1
        assert r["loss_curve"] and r["train_cpu_seconds"] >= 0
    for m in models:  # equal parameters across iteration counts
        assert len({r["parameters"] for r in runs["runs"] if r["model"] == m}) == 1
    md = (out / "table.md").read_text()
    assert "| model |" in md and "Total time" in md and "Command:" in md
    for m in models:
        assert f"| {m} |" in md
    for name in pngs:
        assert (out / name).stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_runs"] == len(cells)
    return runs, md


def test_table2_quick(tmp_path):
    main(["table2", "--quick", "--seeds", "1", "--iters", "1,2", "--models", "ViT,ViT3D",
          "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    _, md = outputs(tmp_path / "out", "table2", ["ViT", "ViT3D"], [1, 2], 1,
                    pngs=("mse_vs_iterations.png", "prediction.png", "paper_vs_iterations.png"))
    assert "(paper 0.2472)" in md


def fno_npz(path, n=12, s=16, t=20):
    rng = np.random.default_rng(0)
    np.savez(path, a=rng.standard_normal((n, s, s)).astype(np.float32),
             u=rng.standard_normal((n, s, s, t)).astype(np.float32),
             t=np.arange(1, t + 1, dtype=np.float32))


def test_table4_quick_on_an_fno_file(tmp_path):
    fno_npz(tmp_path / "ns.npz")
    main(["table4", "--quick", "--seeds", "2", "--iters", "1,2", "--models", "1H1B",
          "--data", str(tmp_path / "ns.npz"), "--out", str(tmp_path / "out")])
    runs, md = outputs(tmp_path / "out", "table4", ["1H1B"], [1, 2], 2)
    assert all(r["formulation"] == "authors" for r in runs["runs"])
    assert "(paper 0.0564)" in md and "formulation=authors" in md


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_table3_quick(tmp_path, dataset):
    if dataset == "cifar10":
        for name in ("data_batch_1", "data_batch_2", "data_batch_3"):
            cifar_batch(tmp_path / name)
        cifar_batch(tmp_path / "test_batch", n=8)
    else:
        fashion_files(tmp_path, n=20)
    main(["table3", "--quick", "--seeds", "1", "--iters", "1,2", "--root", str(tmp_path),
          "--dataset", dataset, "--out", str(tmp_path / "out")])
    runs, md = outputs(tmp_path / "out", "table3", ["ViT"], [1, 2], 1)
    assert f"({dataset}, 75% masked)" in md
    assert all(r["dataset"] == dataset for r in runs["runs"])


def test_bad_options_exit_cleanly(tmp_path):
    for argv in (["table2", "--quick", "--models", "ViT9"], ["table4", "--quick", "--seeds", "0"],
                 ["table3", "--quick", "--root", str(tmp_path / "none")],
                 ["table2", "--quick", "--iters", "0"]):
        with pytest.raises((SystemExit, ValueError)) as e:
            main(argv + ["--out", str(tmp_path / "o"), *(
                ["--cache-dir", str(tmp_path)] if argv[0] != "table3" else [])])
        if isinstance(e.value, SystemExit):
            assert e.value.code not in (0, None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo not available")
def test_table2_under_torchrun_two_cpu_ranks(tmp_path):
    """The unchanged training loop under torchrun (gloo): samples sharded, gradients averaged,
    solves with a tolerance synchronised (dist_sync): the ranks' weights stay identical."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "fastpicard.reproduce", "table2", "--quick", "--seeds", "1", "--iters", "3",
           "--models", "ViT", "--tol", "1e-3", "--epochs", "2", "--out", str(out),
           "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["world_size"] == 2
    assert runs[0]["max_weight_diff_across_ranks"] == 0.0
    assert len(runs[0]["loss_curve"]) == 2 * 1  # 8 samples / 2 ranks = 4 = one batch per epoch
