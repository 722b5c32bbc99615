"""dist_sync=True: two gloo ranks on CPU run the same number of steps (subprocesses, bounded)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo not available")


def test_dist_sync_two_ranks(tmp_path):
    worker = Path(__file__).with_name("solver_ddp_worker.py")
    init = tmp_path / "init"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(init),
                               str(tmp_path / f"out{r}.pt")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    out = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]

    local = [o[False] for o in out]
    synced = [o[True] for o in out]
    # without sync the ranks stop at different steps; with it, both run the slower rank's count
    assert local[0]["steps"] < local[1]["steps"]
    assert synced[0]["steps"] == synced[1]["steps"] == local[1]["steps"]
    # fn calls: one per step, plus the one at x* that implicit backward differentiates
    assert synced[0]["calls"] == synced[1]["calls"] == synced[0]["steps"] + 1
    assert synced[0]["adjoint_steps"] == synced[1]["adjoint_steps"]
    for r in range(2):  # the answer is each rank's own exact early exit
        assert torch.equal(synced[r]["x"], local[r]["x"])
        assert torch.equal(synced[r]["iterations"], local[r]["iterations"])
        torch.testing.assert_close(synced[r]["grad"], local[r]["grad"], rtol=0, atol=0)
    assert out[0]["raised"] and out[1]["raised"]
