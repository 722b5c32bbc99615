"""picard_update (and picard_update_out) on drawn shapes, strides, dtypes, devices (meta
included), aliasing and sample ids, on every backend: the reference's answer or a clear
error."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cases import (DTYPES, LAYOUTS, assert_ran, assert_refused, close, examples, layout,
                   log_case, outcome)
from fastpicard.ops import _backend, picard_update, reference

# defect -> the exception it must raise (None: a valid variation)
DEFECTS = {
    None: None, "all_meta": None, "alias_z_x": None,
    "z_shape": ValueError, "z_dtype": TypeError, "integer": TypeError, "x_list": TypeError,
    "meta_x": ValueError, "meta_z": ValueError, "meta_batch": ValueError,
    "meta_frozen": ValueError, "meta_out": ValueError,
    "batch_int32": TypeError, "batch_length": ValueError, "batch_2d": ValueError,
    "id_high": IndexError, "id_negative": IndexError,
    "samples_over_rows": ValueError, "samples_negative": ValueError,
    "samples_huge": ValueError, "samples_beyond_int64": ValueError, "samples_unbatched": ValueError,
    "frozen_length": ValueError, "frozen_dtype": TypeError,
    "alpha_one": ValueError, "alpha_nan": ValueError, "alpha_negative": ValueError,
    "alpha_str": TypeError, "alpha_grad": TypeError,
    "out_shape": ValueError, "out_dtype": ValueError, "out_strided": ValueError,
    "out_partial_x": ValueError, "out_over_batch": ValueError, "out_over_frozen": ValueError,
    "out_grad": RuntimeError,
}
NEEDS_BATCH = {"meta_batch", "batch_int32", "batch_length", "batch_2d", "id_high", "id_negative",
               "samples_over_rows", "out_over_batch"}
NEEDS_FROZEN = {"meta_frozen", "frozen_length", "frozen_dtype", "out_over_frozen"}
NEEDS_OUT = {"meta_out", "out_shape", "out_dtype", "out_strided", "out_partial_x",
             "out_over_batch", "out_over_frozen", "out_grad"}
NEEDS_ELEMENTS = {"out_partial_x", "out_over_batch", "out_over_frozen"}  # overlap needs memory


@st.composite
def cases(draw, defect):
    # what the defect needs: rows (a batch), a frozen mask, a fresh out, some elements
    need_rows = defect in NEEDS_BATCH
    need_elements = defect in NEEDS_ELEMENTS or defect in ("out_partial_x", "out_strided")
    low = 2 if defect in ("out_partial_x", "out_strided") else int(need_rows or need_elements)
    shape = tuple(draw(st.lists(st.integers(low, 6), min_size=int(low > 0), max_size=3)))
    batched = need_rows or (bool(shape) and draw(st.booleans()))
    rows = shape[0] if batched else 0
    return dict(
        seed=draw(st.integers(0, 2 ** 16)), shape=shape, dtype=draw(st.sampled_from(DTYPES)),
        layout_x=draw(st.sampled_from(LAYOUTS)), layout_z=draw(st.sampled_from(LAYOUTS)),
        batched=batched, num_samples=draw(st.integers(min(rows, 1), rows)) if batched else 1,
        frozen=defect in NEEDS_FROZEN or draw(st.booleans()),
        out="fresh" if defect in NEEDS_OUT else draw(st.sampled_from([None, "fresh", "x", "z"])),
        return_norm=draw(st.booleans()), alpha=draw(st.floats(0.0, 0.99)), defect=defect)


def build(case):
    g = torch.Generator().manual_seed(case["seed"])
    shape, dtype, defect = case["shape"], case["dtype"], case["defect"]
    S = case["num_samples"]
    x = layout(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype), case["layout_x"])
    z = layout(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype), case["layout_z"])
    batch = (torch.randint(0, max(S, 1), shape[:1], generator=g) if case["batched"] else None)
    frozen = (torch.rand(S, generator=g) < 0.5) if case["frozen"] else None
    kw = dict(batch=batch, num_samples=S, frozen=frozen, return_norm=case["return_norm"])
    alpha = case["alpha"]
    if defect == "alias_z_x":
        z = x
    elif defect == "z_shape":
        z = torch.randn(shape + (2,), generator=g).to(dtype)
    elif defect == "z_dtype":
        z = z.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif defect == "integer":
        x, z = (t.double().mul(10).long() for t in (x, z))
    elif defect == "batch_int32":
        kw["batch"] = batch.int()
    elif defect == "batch_length":
        kw["batch"] = torch.cat([batch, batch[:1]])
    elif defect == "batch_2d":
        kw["batch"] = batch[:, None]
    elif defect == "id_high":
        kw["batch"] = batch.clone().index_fill_(0, torch.tensor([0]), S + 3)
    elif defect == "id_negative":
        kw["batch"] = batch.clone().index_fill_(0, torch.tensor([0]), -1)
    elif defect == "samples_over_rows":
        kw["num_samples"] = shape[0] + 1
        kw["frozen"] = None
    elif defect == "samples_negative":
        kw["num_samples"] = -1
        kw["frozen"] = None
    elif defect == "samples_huge":
        kw["num_samples"] = 2 ** 62
        kw["frozen"] = None
    elif defect == "samples_beyond_int64":
        kw["num_samples"] = 2 ** 70
        kw["frozen"] = None
    elif defect == "samples_unbatched":
        kw.update(batch=None, num_samples=2, frozen=None)
    elif defect == "frozen_length":
        kw["frozen"] = torch.zeros(S + 1, dtype=torch.bool)
    elif defect == "frozen_dtype":
        kw["frozen"] = frozen.long()
    elif defect == "alpha_one":
        alpha = 1.0
    elif defect == "alpha_nan":
        alpha = math.nan
    elif defect == "alpha_negative":
        alpha = -0.25
    elif defect == "alpha_str":
        alpha = "0.5"
    elif defect == "alpha_grad":
        alpha = torch.tensor(0.5, requires_grad=True)
    out = None
    if case["out"] == "fresh":
        out = torch.full(shape, math.nan, dtype=dtype)
    elif case["out"] == "x" and isinstance(x, torch.Tensor) and x.is_contiguous() and \
            x.dtype == dtype:
        out = x
    elif case["out"] == "z" and z.is_contiguous() and z.shape == x.shape and z.dtype == dtype:
        out = z
    if defect == "out_shape":
        out = torch.empty(shape + (1,), dtype=dtype)
    elif defect == "out_dtype":
        out = out.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif defect == "out_strided":
        out = torch.empty(shape[:-1] + (2 * shape[-1],), dtype=dtype)[..., ::2] if \
            shape and shape[-1] > 1 else torch.empty(shape + (2,), dtype=dtype)[..., 0]
    elif defect == "out_partial_x":
        buf = torch.randn(x.numel() + 1).to(dtype)
        x, out = buf[:-1].view(shape), buf[1:].view(shape)
    elif defect == "out_over_batch":
        buf = torch.zeros(max(x.numel() * x.element_size(), 8 * shape[0]), dtype=torch.uint8)
        out = buf[: x.numel() * x.element_size()].view(dtype).view(shape)
        kw["batch"] = buf[: 8 * shape[0]].view(torch.int64).zero_()
    elif defect == "out_over_frozen":
        out = torch.zeros(shape, dtype=dtype)
        kw["frozen"] = out.view(-1).view(torch.uint8)[:S].view(torch.bool)
    elif defect == "out_grad":
        x = x.detach().requires_grad_()
    if defect and defect.startswith("meta_") or defect == "all_meta":
        names = ["x", "z", "batch", "frozen", "out"] if defect == "all_meta" else [defect[5:]]
        values = dict(x=x, z=z, batch=kw["batch"], frozen=kw["frozen"], out=out)
        moved = {k: values[k].to("meta") if isinstance(values[k], torch.Tensor) else values[k]
                 for k in names}
        x, z, out = moved.get("x", x), moved.get("z", z), moved.get("out", out)
        kw["batch"], kw["frozen"] = moved.get("batch", kw["batch"]), moved.get("frozen",
                                                                                kw["frozen"])
        if defect == "meta_out" and out is None:
            out = torch.empty(shape, dtype=dtype, device="meta")
    if defect == "x_list":
        x = x.tolist()
    return x, z, alpha, kw, out


def run(case, backend):
    log_case(backend=backend, **case)
    x, z, alpha, kw, out = build(case)
    defect = case["defect"]
    if defect == "all_meta":  # meta tensors: the dispatcher's choice (shape inference)
        backend = None
    valid = DEFECTS[defect] is None
    expected = None
    if valid and defect != "all_meta":
        expected = reference.picard_update(x.double(), z.double(), float(alpha), kw["batch"],
                                           kw["num_samples"], kw["frozen"], True)
    with _backend.triton_cpu_kernels() if backend == "triton" else torch.enable_grad():
        got, err = outcome(lambda: picard_update(x, z, alpha, out=out, backend=backend, **kw))
    if not valid:
        assert_refused(err, DEFECTS[defect] if DEFECTS[defect] is not RuntimeError
                       else (RuntimeError,), "picard_update", defect)
        return
    assert_ran(err, defect)
    x_new, res = got[0], got[1]
    if defect == "all_meta":
        assert x_new.device.type == "meta" and res.shape == (kw["num_samples"],)
        return
    if out is not None:
        assert x_new is out
    dtype = case["dtype"]
    close(x_new, expected[0], dtype, "x_new")
    close(res, expected[1], dtype, "res")
    if kw["return_norm"]:
        close(got[2], expected[2], dtype, "norm")


VALID_EXAMPLES, DEFECT_EXAMPLES = 150, 8  # per defect: every one is drawn, in varied cases


@pytest.mark.parametrize("defect", list(DEFECTS), ids=str)
def test_cpp_and_reference(defect):
    @examples(VALID_EXAMPLES if defect is None else DEFECT_EXAMPLES)
    @given(cases(defect))
    def check(case):
        run(case, "cpp")
        run(case, "reference")
    check()


@pytest.mark.skipif(not (_backend.triton_available() and _backend.triton_interpreting()),
                    reason="Triton interpreter not active")
@pytest.mark.parametrize("defect", list(DEFECTS), ids=str)
def test_triton(defect):
    @examples(30 if defect is None else 2)
    @given(cases(defect))
    def check(case):
        run(case, "triton")
    check()
