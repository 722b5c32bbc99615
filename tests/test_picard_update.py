"""fastpicard.ops.picard_update against the float64 reference, on every backend."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastpicard
from fastpicard.ops import picard_update, reference
from helpers import (DTYPES, assert_close, backends, noncontiguous, poisoned_like,
                     run_isolated)

SHAPES = [(0,), (1,), (7,), (1023,), (1025,), (100_003,), (0, 3), (1, 1), (7, 3), (1025, 5),
          (33, 4, 3)]
ALL_BACKENDS = backends("cpu")


def make(shape, dtype, batched, frozen_p=0.0):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    z = torch.randn(shape, dtype=torch.float64).to(dtype)
    kw = {}
    if batched:
        rows = shape[0]
        s = min(5, rows)  # a batch of R rows holds at most R samples
        kw["batch"] = torch.randint(0, max(s, 1), (rows,))  # unsorted, some may be empty
        kw["num_samples"] = s
        if frozen_p:
            kw["frozen"] = torch.rand(s) < frozen_p
    elif frozen_p:
        kw["frozen"] = torch.tensor([True])
    return x, z, kw


def expected(x, z, alpha, kw, return_norm=True):
    return reference.picard_update(x.double(), z.double(), alpha, kw.get("batch"),
                                   kw.get("num_samples", 1), kw.get("frozen"), return_norm)


def check(got, want, dtype):
    x_new, res, norm = got
    w_new, w_res, w_norm = want
    assert x_new.dtype == dtype and x_new.shape == w_new.shape
    assert_close(x_new, w_new, dtype)
    assert res.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(res.double(), w_res, rtol=rtol, atol=rtol)
    torch.testing.assert_close(norm.double(), w_norm, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("batched", [False, True], ids=["whole", "batch"])
def test_matches_reference(backend, dtype, shape, batched):
    x, z, kw = make(shape, dtype, batched, frozen_p=0.4)
    alpha = 0.37
    got = picard_update(x, z, alpha, return_norm=True, backend=backend, **kw)
    check(got, expected(x, z, alpha, kw), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpp_rounds_like_eager_torch(dtype):
    """Bit-identical to ``alpha*x + (1-alpha)*z`` in eager torch (no FMA contraction), so
    fused models reproduce plain PyTorch loops exactly."""
    x, z = torch.randn(100_003, dtype=dtype), torch.randn(100_003, dtype=dtype)
    for alpha in (0.3, 0.55, 0.9):
        assert torch.equal(picard_update(x, z, alpha, backend="cpp")[0],
                           alpha * x + (1 - alpha) * z)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_frozen_samples_pass_through_exactly(backend):
    x, z, kw = make((200, 6), torch.float32, batched=True)
    kw["frozen"] = torch.tensor([True, False, True, False, False])
    x_new, res = picard_update(x, z, 0.5, backend=backend, **kw)
    rows = kw["frozen"][kw["batch"]]
    assert torch.equal(x_new[rows], x[rows])
    assert not torch.equal(x_new[~rows], x[~rows])
    assert torch.all(res[kw["frozen"]] == 0)
    assert torch.all(res[~kw["frozen"]] > 0)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_noncontiguous_inputs(backend, dtype):
    x, z, kw = make((301, 9), dtype, batched=True)
    xn, zn = noncontiguous(x), noncontiguous(z)
    assert not xn.is_contiguous()
    got = picard_update(xn, zn, 0.6, return_norm=True, backend=backend, **kw)
    check(got, expected(x, z, 0.6, kw), dtype)
    xt = torch.randn(5, 40).t()  # transposed: rows along dim 0 of the view
    zt = torch.randn(5, 40).t()
    got = picard_update(xt, zt, 0.2, return_norm=True, backend=backend)
    check(got, expected(xt, zt, 0.2, {}), torch.float32)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("shape,batched", [((1025,), False), ((257, 3), True), ((0, 4), True)])
def test_out_buffer_is_fully_written(backend, shape, batched):
    x, z, kw = make(shape, torch.float32, batched, frozen_p=0.5)
    out = poisoned_like(x)
    x_new, res, norm = picard_update(x, z, 0.3, out=out, return_norm=True, backend=backend, **kw)
    assert x_new is out
    assert not torch.isnan(out).any()
    check((x_new, res, norm), expected(x, z, 0.3, kw), torch.float32)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_in_place_update(backend):
    x, z, kw = make((513, 4), torch.float32, batched=True, frozen_p=0.5)
    want = expected(x, z, 0.45, kw)
    x_before = x.clone()
    x_new, res, norm = picard_update(x, z, 0.45, out=x, return_norm=True, backend=backend, **kw)
    assert x_new is x
    check((x_new, res, norm), want, torch.float32)
    assert not torch.equal(x, x_before)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradcheck(backend):
    x = torch.randn(23, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(23, 3, dtype=torch.float64, requires_grad=True)
    batch = torch.randint(0, 4, (23,))
    frozen = torch.tensor([True, False, False, True])

    def f(x, z):
        return picard_update(x, z, 0.3, batch=batch, num_samples=4, frozen=frozen,
                             backend=backend)[0]

    assert torch.autograd.gradcheck(f, (x, z))
    assert torch.autograd.gradgradcheck(f, (x, z))
    assert torch.autograd.gradcheck(lambda x, z: picard_update(x, z, 0.8, backend=backend)[0],
                                    (x, z))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_residual_is_not_differentiable(backend):
    x = torch.randn(10, requires_grad=True)
    z = torch.randn(10, requires_grad=True)
    x_new, res, norm = picard_update(x, z, 0.5, return_norm=True, backend=backend)
    assert x_new.requires_grad
    assert not res.requires_grad and not norm.requires_grad


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nonfinite_input_shows_in_residual(backend):
    x = torch.randn(100, 2)
    z = torch.randn(100, 2)
    z[17, 1] = float("nan")
    z[60, 0] = float("inf")
    batch = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long),
                       ]).flip(0)  # rows 0-49 -> sample 1, rows 50-99 -> sample 0
    _, res = picard_update(x, z, 0.5, batch=batch, num_samples=2, backend=backend)
    assert torch.isinf(res[0]) or torch.isnan(res[0])
    assert torch.isnan(res[1])
    _, res = picard_update(x, z, 0.5, backend=backend)
    assert not torch.isfinite(res).any()


def test_deterministic_across_thread_counts():
    x, z, kw = make((300_001,), torch.float32, batched=False)
    xb, zb, kwb = make((20_001, 7), torch.float32, batched=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = picard_update(x, z, 0.5, return_norm=True)
        one_b = picard_update(xb, zb, 0.5, return_norm=True, **kwb)
        torch.set_num_threads(max(threads, 2))
        many = picard_update(x, z, 0.5, return_norm=True)
        many_b = picard_update(xb, zb, 0.5, return_norm=True, **kwb)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one + one_b, many + many_b):
        assert torch.equal(a, b)


@pytest.mark.skipif(not fastpicard.extension_available(), reason="needs the compiled extension")
def test_opcheck():
    x = torch.randn(37, 5, requires_grad=True)
    z = torch.randn(37, 5, requires_grad=True)
    batch = torch.randint(0, 3, (37,))
    frozen = torch.tensor([False, True, False])
    op = torch.ops.fastpicard.picard_update.default
    torch.library.opcheck(op, (x, z, 0.25, batch, 3, frozen, True))
    torch.library.opcheck(op, (x, z, 0.25, None, 1, None, False))
    out = torch.empty(37, 5)
    torch.library.opcheck(torch.ops.fastpicard.picard_update_out.default,
                          (x.detach(), z.detach(), 0.25, batch, 3, frozen, True, out))


@pytest.mark.skipif(not fastpicard.extension_available(), reason="needs the compiled extension")
def test_torch_compile_fullgraph():
    def step(x, z, batch):
        x_new, res, norm = picard_update(x, z, 0.5, batch=batch, num_samples=4, return_norm=True)
        return x_new * 2, res / norm

    x = torch.randn(50, 8)
    z = torch.randn(50, 8)
    batch = torch.randint(0, 4, (50,))
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    for a, b in zip(compiled(x, z, batch), step(x, z, batch)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ bad input
def bad_cases():
    x = torch.randn(6, 2)
    z = torch.randn(6, 2)
    b = torch.tensor([0, 1, 1, 0, 2, 2])
    return [
        (dict(x=x, z=torch.randn(6, 3)), ValueError, "z has shape"),
        (dict(x=x, z=z.double()), TypeError, "z has dtype"),
        (dict(x=x.long(), z=z.long()), TypeError, "x must be"),
        (dict(x=x, z=z, alpha=1.0), ValueError, "alpha"),
        (dict(x=x, z=z, alpha=-0.1), ValueError, "alpha"),
        (dict(x=x, z=z, alpha=float("nan")), ValueError, "alpha"),
        (dict(x=x, z=z, alpha="0.5"), TypeError, "alpha"),
        (dict(x=x, z=z, batch=b[:5]), ValueError, "batch must have shape"),
        (dict(x=x, z=z, batch=b.int()), TypeError, "batch must be int64"),
        (dict(x=x, z=z, batch=b, num_samples=2), IndexError, "batch.* contains (id )?2"),
        (dict(x=x, z=z, batch=b - 1, num_samples=3), IndexError, "batch.* contains (id )?-1"),
        (dict(x=x, z=z, num_samples=3), ValueError, "needs a batch"),
        (dict(x=x, z=z, batch=b, frozen=torch.tensor([True, False])), ValueError,
         "frozen must have shape"),
        (dict(x=x, z=z, batch=b, frozen=torch.tensor([1, 0, 1])), TypeError,
         "frozen must be bool"),
        (dict(x=x, z=z, out=torch.empty(6, 3)), ValueError, "out must match"),
        (dict(x=x, z=z, out=torch.empty(2, 6).t()), ValueError, "out must be contiguous"),
        (dict(x=x, z=z, backend="cuda"), ValueError, "backend must be one of"),
    ]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_bad_input(backend, case):
    kw, err, msg = bad_cases()[case]
    kw = dict(kw)
    x, z = kw.pop("x"), kw.pop("z")
    alpha = kw.pop("alpha", 0.5)
    kw.setdefault("backend", backend)
    with pytest.raises(err, match=msg):
        picard_update(x, z, alpha, **kw)


def test_bad_input_never_half_writes_in_place():
    x = torch.randn(6, 2)
    before = x.clone()
    with pytest.raises(IndexError):
        picard_update(x, torch.randn(6, 2), 0.5, batch=torch.tensor([0, 1, 1, 0, 2, 9]),
                      num_samples=3, out=x)
    assert torch.equal(x, before)


@pytest.mark.skipif(not fastpicard.extension_available(), reason="needs the compiled extension")
def test_raw_op_checks_in_cpp():
    x, z = torch.randn(4, 2), torch.randn(4, 3)
    with pytest.raises(ValueError, match="z has shape"):
        torch.ops.fastpicard.picard_update(x, z, 0.5, None, 1, None, False)
    with pytest.raises(ValueError, match="alpha"):
        torch.ops.fastpicard.picard_update(x, x, 1.5, None, 1, None, False)
    with pytest.raises(IndexError, match="outside"):
        torch.ops.fastpicard.picard_update(x, x, 0.5, torch.tensor([0, 0, 5, 0]), 2, None, False)


def test_out_refuses_grad():
    x = torch.randn(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        picard_update(x, torch.randn(4), 0.5, out=torch.empty(4))
    with torch.no_grad():
        picard_update(x, torch.randn(4), 0.5, out=torch.empty(4))


def test_out_into_a_leaf_that_requires_grad_is_refused():
    w = torch.zeros(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        picard_update(torch.randn(4), torch.randn(4), 0.5, out=w)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_out_partly_overlapping_an_input_is_refused(backend):
    buf = torch.arange(10.0)
    before = buf.clone()
    for x, z, out in ((buf[:-1], torch.zeros(9), buf[1:]), (torch.zeros(9), buf[1:], buf[:-1])):
        with pytest.raises(ValueError, match="overlaps"):
            picard_update(x, z, 0.5, out=out, backend=backend)
    assert torch.equal(buf, before)  # nothing written
    # exactly in place stays allowed
    x, z = torch.randn(6, 3), torch.randn(6, 3)
    expected = 0.25 * x + 0.75 * z
    picard_update(x, z, 0.25, out=x, backend=backend)
    torch.testing.assert_close(x, expected)


@pytest.mark.skipif(not fastpicard.extension_available(), reason="needs the compiled extension")
def test_out_op_refuses_partial_overlap_and_bumps_the_version():
    buf = torch.arange(10.0)
    with pytest.raises(ValueError, match="overlaps x partly"):
        torch.ops.fastpicard.picard_update_out(buf[:-1], torch.zeros(9), 0.5, None, 1, None,
                                               False, buf[1:])
    # autograd notices that a tensor it saved was overwritten through out=
    x, a = torch.randn(5), torch.randn(5, requires_grad=True)
    y = (a * x).sum()
    with torch.no_grad():
        picard_update(x, torch.zeros(5), 0.5, out=x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_triton_backend_needs_interpreter_on_cpu(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        picard_update(torch.randn(3), torch.randn(3), 0.5, backend="triton")


def test_default_num_samples_and_empty_batch():
    x = torch.randn(9, 2)
    _, res = picard_update(x, x + 1, 0.5, batch=torch.tensor([0, 0, 3, 3, 3, 1, 1, 1, 1]))
    assert res.shape == (4,) and res[2] == 0
    _, res = picard_update(torch.empty(0, 2), torch.empty(0, 2), 0.5,
                           batch=torch.empty(0, dtype=torch.long))
    assert res.shape == (0,)


def test_alpha_tensor():
    x, z = torch.randn(5), torch.randn(5)
    a = picard_update(x, z, torch.tensor(0.3))[0]
    torch.testing.assert_close(a, picard_update(x, z, 0.3)[0])
    with pytest.raises(TypeError, match="alpha"):
        picard_update(x, z, torch.tensor(0.3, requires_grad=True))


# ------------------------------------------------------------------ packaging
def run_python(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_outside_source_tree(tmp_path):
    r = run_python("""
        import torch, fastpicard
        from fastpicard.kernels import picard_update as k
        assert fastpicard.extension_available()
        x = torch.ones(3)
        print(fastpicard.ops.picard_update(x, 2 * x, 0.5)[1].item())
    """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) == pytest.approx(3 ** 0.5 * 0.5)


def test_fallback_when_extension_cannot_load(tmp_path):
    r = run_python("""
        import sys, warnings
        sys.modules["fastpicard._C"] = None  # makes `from . import _C` raise ImportError
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import torch, fastpicard
        msgs = [str(m.message) for m in w if "fastpicard" in str(m.message)]
        assert len(msgs) == 1 and "reference" in msgs[0], msgs
        assert not fastpicard.extension_available()
        x = torch.ones(3, requires_grad=True)
        y, res = fastpicard.ops.picard_update(x, 2 * x, 0.5)
        y.sum().backward()
        print(res.item(), x.grad.tolist())
    """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res, grad = r.stdout.split(" ", 1)
    assert float(res) == pytest.approx(3 ** 0.5 * 0.5)
    assert "1.5" in grad  # d/dx (0.5 x + 0.5 * 2x) = 1.5


# ------------------------------------------------------------------ CUDA (lent GPU only)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0,), (1,), (1025,), (100_003,), (4097, 3), (33, 300)],
                         ids=str)
@pytest.mark.parametrize("batched", [False, True], ids=["whole", "batch"])
def test_cuda_matches_reference(dtype, shape, batched):
    x, z, kw = make(shape, dtype, batched, frozen_p=0.4)
    want = expected(x, z, 0.3, kw)
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    xc, zc = x.cuda(), z.cuda()
    got = picard_update(xc, zc, 0.3, return_norm=True, **kw)  # dispatcher -> Triton
    check(tuple(t.cpu() for t in got), want, dtype)
    out = poisoned_like(xc)
    got = picard_update(xc, zc, 0.3, return_norm=True, out=out, **kw)
    check(tuple(t.cpu() for t in got), want, dtype)
    again = picard_update(xc, zc, 0.3, return_norm=True, **kw)
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # deterministic


@cuda
def test_cuda_gradcheck_and_opcheck():
    x = torch.randn(23, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    z = torch.randn(23, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    batch = torch.randint(0, 4, (23,), device="cuda")
    frozen = torch.tensor([True, False, False, True], device="cuda")
    assert torch.autograd.gradcheck(
        lambda x, z: picard_update(x, z, 0.3, batch=batch, num_samples=4, frozen=frozen)[0],
        (x, z))
    torch.library.opcheck(torch.ops.fastpicard.picard_update.default,
                          (x.float(), z.float(), 0.25, batch, 4, frozen, True))


# ------------------------------------------------------------------ hostile input
needs_ext = pytest.mark.skipif(not fastpicard.extension_available(),
                               reason="needs the compiled extension")


@needs_ext
def test_meta_among_real_tensors_is_an_error():
    """A meta tensor among real ones used to route to the fake kernel: uninitialised memory
    returned as the answer. Every tensor argument must be on x's device."""
    x, m = torch.ones(4, 4), torch.ones(4, 4, device="meta")
    b, mb = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 1, 0], device="meta")
    f, mf = torch.tensor([False, True]), torch.tensor([False, True], device="meta")
    op, op_out = torch.ops.fastpicard.picard_update, torch.ops.fastpicard.picard_update_out
    for args in ((x, m, 0.5, None, 1, None, False), (m, x, 0.5, None, 1, None, False),
                 (x, x, 0.5, mb, 2, f, False), (x, x, 0.5, b, 2, mf, True)):
        with pytest.raises(ValueError, match="meta"):
            op(*args)
        with pytest.raises(ValueError, match="meta"):
            op_out(*args, torch.empty(4, 4))
    with pytest.raises(ValueError, match="meta"):
        op_out(x, x, 0.5, None, 1, None, False, torch.empty(4, 4, device="meta"))
    with pytest.raises(ValueError, match="meta"):
        picard_update(x, m, 0.5)
    # all on meta: shape inference, as for any torch op
    out, res, norm = op(m, m, 0.5, mb, 2, mf, True)
    assert out.device.type == "meta" and res.shape == (2,) and norm.shape == (2,)


def test_out_sharing_memory_with_batch_is_refused():
    """out= overlapping batch (or frozen) was not checked: the kernel overwrote the sample ids
    it was reading (a segfault). Run apart, so a crash fails only this test."""
    r = run_isolated("""
        import torch
        from fastpicard.ops import picard_update
        x, z = torch.randn(6, 1, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
        for backend in ("cpp", "reference"):
            out = torch.zeros(6, 1, dtype=torch.float64)
            batch = out.view(torch.int64).squeeze(1)
            try:
                picard_update(x, z, 0.5, batch=batch, num_samples=1, out=out, backend=backend)
            except ValueError as e:
                print("refused:", e)
            out = torch.zeros(6, dtype=torch.float64)
            frozen = out.view(torch.bool)[:2]
            try:
                picard_update(x.squeeze(1), z.squeeze(1), 0.5, batch=torch.tensor([0, 1] * 3),
                              num_samples=2, frozen=frozen, out=out, backend=backend)
            except ValueError as e:
                print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refused:") == 4 and "batch" in r.stdout and "frozen" in r.stdout, \
        r.stdout


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_num_samples_is_bounded_by_the_rows(backend):
    """num_samples=2**30 for 6 rows allocated gigabytes of per-sample sums; 2**62 failed
    inside std::vector. A batch of R rows holds at most R samples."""
    x, z, b = torch.randn(6, 2), torch.randn(6, 2), torch.zeros(6, dtype=torch.long)
    for s in (7, 2 ** 30, 2 ** 62):
        with pytest.raises(ValueError, match="num_samples"):
            picard_update(x, z, 0.5, batch=b, num_samples=s, backend=backend)
    for s in (2 ** 63, 2 ** 80, -2 ** 70):
        with pytest.raises(ValueError, match="num_samples"):
            picard_update(x, z, 0.5, batch=b, num_samples=s, backend=backend)
    assert picard_update(x, z, 0.5, batch=b, num_samples=6, backend=backend)[1].shape == (6,)
