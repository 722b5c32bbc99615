"""One rank of the dist_sync test (run by tests/test_solver_ddp.py as a subprocess)."""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from fastpicard import DivergenceError, picard


def main(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    A = torch.randn(6, 6, dtype=torch.float64)
    lam = 0.2 if rank == 0 else 0.9  # rank 0 converges much sooner than rank 1
    M = (lam * A / torch.linalg.matrix_norm(A, 2)).requires_grad_()
    f = torch.randn(3, 6, dtype=torch.float64)
    calls = [0]

    def fn(x):
        calls[0] += 1
        return x @ M.T + f

    out = {}
    for sync in (False, True):
        calls[0] = 0
        x, st = picard(fn, torch.zeros(3, 6, dtype=torch.float64), tol=1e-10, max_iter=500,
                       batch="leading", dist_sync=sync, backward="implicit")
        forward_calls = calls[0]
        x.sum().backward()
        out[sync] = dict(x=x.detach(), iterations=st.iterations, steps=st.steps,
                         calls=forward_calls, grad=M.grad.clone(), adjoint_steps=st.backward.steps)
        M.grad = None
    # a diverging sample on one rank makes every rank raise (no rank left waiting)
    gain = torch.tensor([[0.5], [3.0 if rank == 1 else 0.5]], dtype=torch.float64)
    try:
        picard(lambda x: gain * x, torch.ones(2, 2, dtype=torch.float64), alpha=0.0, tol=1e-12,
               max_iter=200, batch="leading", divergence_factor=10.0, on_diverge="raise",
               dist_sync=True)
        out["raised"] = False
    except DivergenceError:
        out["raised"] = True
    torch.save(out, out_file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
