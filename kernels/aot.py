"""Ahead-of-time compile of every Triton kernel for real GPUs, on a machine without one:

    python -m fastpicard.kernels.aot [--arch 90,80] [--set ci|full] [--jobs N] [--csv PATH]

The launchers of this package are called on CPU tensors with every option they take (dtypes
fp32/fp16/bf16/fp64, flags, activations) at feature widths 1, 3, 64, 130, 1024 and CSR
degrees that select each edge block; each kernel launch is recorded instead of run. Every
distinct launch is then compiled for each target by Triton's own JIT (``warmup`` under a
stand-in driver that reports the target), so constexprs, block sizes and the argument
specialization (16-byte aligned pointers, integers divisible by 16) are exactly what the
launchers produce at run time. Per compiled variant: registers, spilled bytes (ptxas' spill
stores), stack frame, shared memory, and the width of the global loads/stores in the PTX
(128-bit = ``ld.global.v4.b32``, ...). Exit status 1 on any compile error or spill; with
``--allow-spills-outside-loops``, only on spills whose local loads/stores sit inside a loop of
the SASS (ptxas 12.8, triton 3.6's, trades one 4-byte value stored before the loops and loaded
after them for a lower register step in a few variants of the full set: once per program, not
per iteration; each such variant is still listed).

``--set full`` crosses every option with every dtype, width and degree one option at a time
(all on, all off, each value toggled from all on); ``--set ci`` (the CI test) compiles the
all-on and all-off corners for every dtype and width and the one-at-a-time toggles at fp32,
width 64. Needs Triton's real JIT: run it without ``TRITON_INTERPRET``.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import csv
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp64": torch.float64}
WIDTHS = (1, 3, 64, 130, 1024)
DEGREES = (2, 4, 6, 12, 24)  # average CSR degree (self loops included): edge blocks 2 .. 32
ROWS = 200


# ---------------------------------------------------------------- launch capture
class _Recorder:
    """Stands in for a JITFunction inside the kernel modules: ``fn[grid](*args)`` is logged."""

    def __init__(self, fn, log):
        self.fn, self.log = fn, log

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.log.append((self.fn, grid, args, kwargs))


def _kernel_modules():
    from . import checks, picard_control, picard_update, spmm, spmm_update
    return (picard_update, picard_control, spmm, spmm_update, checks)


@contextlib.contextmanager
def _recording(log):
    from triton.runtime.jit import JITFunction

    saved = []
    for mod in _kernel_modules():
        for name, obj in vars(mod).items():
            if isinstance(obj, JITFunction):
                saved.append((mod, name, obj))
    if not saved:
        raise RuntimeError("no Triton JIT kernels found: TRITON_INTERPRET must be unset before "
                           "fastpicard.kernels is imported")
    for mod, name, obj in saved:
        setattr(mod, name, _Recorder(obj, log))
    try:
        yield
    finally:
        for mod, name, obj in saved:
            setattr(mod, name, obj)


def _variants(options: dict, mode: str):
    """Option assignments: 'corners' (all first values, all last values), 'toggles' (all last
    values with each option set to each of its other values), or both."""
    names = list(options)
    on = {k: v[-1] for k, v in options.items()}
    out = []
    if mode in ("corners", "both"):
        out += [{k: v[0] for k, v in options.items()}, on]
    if mode in ("toggles", "both"):
        for k in names:
            out += [dict(on, **{k: v}) for v in options[k][:-1]]
    seen, uniq = set(), []
    for v in out:
        key = tuple(sorted(v.items(), key=lambda kv: kv[0]))
        if key not in seen:
            seen.add(key)
            uniq.append(v)
    return uniq


def _graph(rows, degree, dtype):
    from ..graph import Graph
    from ..ops.spmm import graph_tensors

    g = torch.Generator().manual_seed(degree)
    ei = torch.randint(0, rows, (2, int(rows * (degree - 1) * 1.05)), generator=g)
    graph = Graph.from_edge_index(ei, rows, norm="gcn")
    return graph_tensors(graph, dtype)


def _plans(which: str):
    """(shape, options) per launcher call: shapes are crossed with the option assignments."""
    dts = list(DTYPES)
    if which == "full":
        shapes_all = [(d, w, deg) for d in dts for w in WIDTHS for deg in DEGREES]
        return {"corners": shapes_all, "toggles": shapes_all}
    corners = [(d, w, deg) for d in dts for w in WIDTHS for deg in (DEGREES[0], DEGREES[-1])]
    return {"corners": corners, "toggles": [("fp32", 64, DEGREES[1])]}


def capture(which: str = "ci", only=()):
    """Runs every launcher over the plan; returns the recorded launches
    [(jit_fn, grid, args, kwargs, label)] (of the kernels named in ``only``, if given); the
    label starts with the launcher and the data dtype."""
    from . import checks, picard_control, picard_update, spmm, spmm_update

    log, launches = [], []
    plans = _plans(which)

    def record(label, call):
        start = len(log)
        call()
        launches.extend((fn, grid, args, kw, label) for fn, grid, args, kw in log[start:]
                        if not only or fn.__name__ in only)

    upd_opts = {"batch": [False, True], "frozen": [False, True], "return_norm": [False, True]}
    ctl_opts = {"rel": [False, True], "step": [0, 1]}
    spmm_opts = {"reduce": ["sum", "mean", "max"], "weighted": [False, True]}
    spmm_bwd_opts = {"reduce": ["sum", "mean", "max"], "weighted": [False, True],
                     "t_weight": [False, True], "need_weight": [False, True]}
    fwd_opts = {"weighted": [False, True], "bias": [False, True],
                "act": ["identity", "relu", "leaky_relu", "tanh"], "dropout": [0.0, 0.5],
                "batch": [False, True], "frozen": [False, True], "return_norm": [False, True],
                "save_act": [False, True]}
    bwd_opts = {"weighted": [False, True], "act": ["identity", "relu", "leaky_relu", "tanh"],
                "dropout": [0.0, 0.5], "batch": [False, True], "frozen": [False, True],
                "need_x": [False, True], "need_weight": [False, True],
                "need_bias": [False, True]}

    with _recording(log):
        # the index checks run before the graph and batch kernels: CSR, with and without the
        # transposed graph's permutation, sample ids, at both index dtypes
        rowptr, col, _, t_rowptr, t_col, t_perm, _ = _graph(ROWS, DEGREES[0], torch.float32)
        for idx in (torch.int32, torch.int64):
            rp, c, tr, tc, tp = (t.to(idx) for t in (rowptr, col, t_rowptr, t_col, t_perm))
            ids = (torch.arange(ROWS, dtype=idx) % 4, 4)
            for csr in (None, (rp, c, ROWS, None), (tr, tc, ROWS, tp)):
                for with_ids in (False, True):
                    if csr is None and not with_ids:
                        continue
                    record(f"check {str(idx).split('.')[-1]} csr={csr is not None} "
                           f"perm={csr is not None and csr[3] is not None} ids={with_ids}",
                           lambda: checks.check("aot", csr=csr, ids=ids if with_ids else None))
        for mode, shapes in plans.items():
            for dname, width, degree in shapes:
                dtype = DTYPES[dname]
                acc = torch.float64 if dtype == torch.float64 else torch.float32
                n = ROWS
                seg = torch.arange(n) % 4
                if degree == shapes[0][2]:  # kernels without a graph: once per dtype/width
                    for o in _variants(upd_opts, mode):
                        x, z = torch.randn(n, width).to(dtype), torch.randn(n, width).to(dtype)
                        record(f"picard_update {dname} w{width} {o}", lambda: (
                            picard_update.picard_update_into(
                                x, z, 0.375, seg if o["batch"] else None, 4,
                                torch.zeros(4, dtype=torch.bool) if o["frozen"] else None,
                                o["return_norm"], torch.empty_like(x))))
                    if dtype in (torch.float32, torch.float64):  # the solver's statistics
                        for o in _variants(ctl_opts, mode):
                            S = width
                            st = [torch.zeros(S, dtype=torch.bool) for _ in range(3)]
                            record(f"picard_control {dname} S{S} {o}", lambda: (
                                picard_control.picard_control(
                                    torch.rand(S, dtype=dtype), torch.rand(S, dtype=dtype),
                                    *st, torch.zeros(S, dtype=torch.int64),
                                    torch.full((3, S), float("inf"), dtype=dtype),
                                    torch.full((2, S), float("nan"), dtype=dtype),
                                    torch.zeros(S, dtype=torch.bool),
                                    torch.zeros(S, dtype=torch.bool),
                                    torch.zeros(4, dtype=torch.int64), o["step"], 1e-4, o["rel"],
                                    1e3)))
                rowptr, col, w, t_rowptr, t_col, t_perm, tw = _graph(n, degree, dtype)
                h, x = torch.randn(n, width).to(dtype), torch.randn(n, width).to(dtype)
                grad = torch.randn(n, width).to(dtype)
                bias = torch.randn(width).to(dtype)
                seed = torch.tensor([1234, 99], dtype=torch.int64)
                for o in _variants(spmm_opts, mode):
                    record(f"spmm {dname} w{width} d{degree} {o}", lambda: spmm.spmm(
                        rowptr, col, w if o["weighted"] else None, t_rowptr, t_col, t_perm,
                        tw if o["weighted"] else None, h, o["reduce"]))
                for o in _variants(spmm_bwd_opts, mode):
                    wt = w if o["weighted"] else None
                    arg = (torch.randint(0, col.numel(), (n, width), dtype=col.dtype)
                           if o["reduce"] == "max" else col.new_empty(0))
                    record(f"spmm_backward {dname} w{width} d{degree} {o}", lambda: (
                        spmm.spmm_backward(grad, rowptr, col, wt, t_rowptr, t_col, t_perm,
                                           tw if (o["t_weight"] and wt is not None) else None,
                                           h, arg, o["reduce"], True,
                                           o["need_weight"] and wt is not None)))
                for o in _variants(fwd_opts, mode):
                    record(f"spmm_update {dname} w{width} d{degree} {o}", lambda: (
                        spmm_update.spmm_update(
                            rowptr, col, w if o["weighted"] else None, t_rowptr, t_col, t_perm,
                            tw if o["weighted"] else None, h, x, 0.375,
                            bias if o["bias"] else None, o["act"], 0.125, o["dropout"], seed,
                            seg if o["batch"] else None, 4,
                            torch.zeros(4, dtype=torch.bool) if o["frozen"] else None,
                            o["return_norm"], o["save_act"])))
                for o in _variants(bwd_opts, mode):
                    wt = w if o["weighted"] else None
                    record(f"spmm_update_backward {dname} w{width} d{degree} {o}", lambda: (
                        spmm_update.spmm_update_backward(
                            grad, h, rowptr, col, wt, t_rowptr, t_col, t_perm,
                            tw if wt is not None else None, h, 0.375, o["act"], 0.125,
                            o["dropout"], seed, seg if o["batch"] else None,
                            torch.zeros(4, dtype=torch.bool) if o["frozen"] else None, True,
                            o["need_x"], o["need_weight"] and wt is not None, o["need_bias"])))
    return launches


# ---------------------------------------------------------------- compile for a target
class _TargetDriver:
    """What Triton's JIT asks the active driver while compiling (``warmup`` launches
    nothing): the target, and a device/stream to key its caches."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def _target(arch: int, kernels):
    from triton.runtime import driver

    before = driver._active
    driver.set_active(_TargetDriver(arch))
    for fn in kernels:
        fn.device_caches.clear()  # binders and caches are per target
    try:
        yield
    finally:
        for fn in kernels:
            fn.device_caches.clear()
        driver._active = before  # not reset_active(): without a GPU there is no default driver


def _spec_key(fn, args, kwargs):
    """Triton's own specialization of a launch (what keys its kernel cache)."""
    _, specialization, options = fn.device_caches[0][4](*args, **kwargs)
    return fn.__name__, repr(specialization), repr(sorted(options.items()))


_LDST = re.compile(r"\b(ld|st)\.global((?:\.[a-z0-9]+)*)\s")
_BITS = {"b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "b32": 32,
         "u32": 32, "s32": 32, "f32": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64,
         "b128": 128}


def global_access_bits(ptx: str):
    """{"ld": Counter(bits), "st": Counter(bits)} over the global loads/stores of the PTX."""
    out = {"ld": collections.Counter(), "st": collections.Counter()}
    for op, mods in _LDST.findall(ptx):
        parts = mods.strip(".").split(".")
        vec = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d+", p)), 1)
        bits = next((_BITS[p] for p in reversed(parts) if p in _BITS), 0)
        out[op][vec * bits] += 1
    return out


def _nvidia_tool(name):
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _ptxas(arch: int) -> list:
    """ptxas as Triton runs it for ``arch``: its choice of binary (triton 3.9 takes the newer
    ptxas-blackwell for sm_90; the older one cannot read that PTX) and the flags that change
    register allocation (triton 3.9 adds --regAllocOptLevel=2: without it ptxas may report no
    spill where Triton's cubin has one)."""
    import inspect

    from triton.backends.nvidia import compiler

    cmd = [compiler.get_ptxas(arch).path, "-lineinfo"]
    if "--regAllocOptLevel=2" in inspect.getsource(compiler.CUDABackend.make_cubin):
        cmd.append("--regAllocOptLevel=2")
    return cmd


def _resources(cubin: bytes):
    """(registers, stack bytes, local bytes) of the cubin's kernel, from cuobjdump (shipped
    with Triton's NVIDIA backend)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([_nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name],
                              capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
    if m is None:
        raise RuntimeError(f"cuobjdump output not understood:\n{text}")
    return tuple(int(v) for v in m.groups())


def _spill_stores(ptx: str, arch: int, kernel: str) -> int:
    """Bytes of spill stores ptxas reports for the kernel itself (asked only when the cubin
    uses local memory at all; the register saves of a called subroutine, such as the slow path
    of an fp64 division, show as its stack frame instead)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}" + ("a" if arch == 90 else "")
        r = subprocess.run([*_ptxas(arch), "-v", f"--gpu-name={gpu}", src, "-o",
                            os.path.join(d, "k.o")], capture_output=True, text=True, check=True)
    found = re.findall(r"Function properties for (\S+)\s+\d+ bytes stack frame, (\d+) bytes "
                       r"spill stores", r.stdout + r.stderr)
    return sum(int(v) for name, v in found if name == kernel)


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def local_accesses_in_loops(sass: str) -> tuple[int, int]:
    """(local-memory loads/stores inside a loop, outside every loop) in a kernel's SASS. A
    backward branch closes a loop [target, branch]; the final ``BRA`` to itself (the trap
    after EXIT) is no loop. A spill outside every loop runs once per program (a value stored
    before the loops and loaded after them); one inside a loop costs every iteration."""
    code, loops = [], []
    for m in _SASS_LINE.finditer(sass):
        addr, op, operands = int(m.group(1), 16), m.group(3), m.group(4)
        code.append((addr, op))
        if op.startswith("BRA"):
            t = re.search(r"0x([0-9a-f]+)", operands)
            if t and int(t.group(1), 16) < addr:
                loops.append((int(t.group(1), 16), addr))
    inside = outside = 0
    for addr, op in code:
        if op.startswith(("STL", "LDL")):
            if any(lo <= addr <= hi for lo, hi in loops):
                inside += 1
            else:
                outside += 1
    return inside, outside


def _sass(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_nvidia_tool("cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout


def _constexprs(fn, args, kwargs):
    names = [p.name for p in fn.params]
    bound = dict(zip(names, args), **kwargs)
    return {p.name: bound[p.name] for p in fn.params if p.is_constexpr and p.name in bound}


def _describe(fn, args, kwargs):
    """The constexprs of a launch, flags by name when set."""
    parts = []
    for k, v in _constexprs(fn, args, kwargs).items():
        v = getattr(v, "name", v)
        if v is True or v is False:
            if v:
                parts.append(k)
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


_LAUNCHES = []  # the parent's capture, inherited by the forked compiler processes


def compile_jobs(arch, indices):
    """Compiles the launches ``indices`` of ``_LAUNCHES`` for ``arch`` (in a worker)."""
    kernels = {fn for fn, *_ in _LAUNCHES}
    rows = []
    with _target(arch, kernels):
        for i in indices:
            fn, grid, args, kwargs, label = _LAUNCHES[i]
            row = {"kernel": fn.__name__, "arch": f"sm_{arch}", "dtype": label.split()[1],
                   "constexprs": _describe(fn, args, kwargs), "example": label}
            t0 = time.perf_counter()
            try:
                k = fn.warmup(*args, grid=grid, **kwargs)
            except Exception as e:  # reported, and the run fails
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                rows.append(row)
                continue
            regs, stack, local = _resources(k.asm["cubin"])
            spill = _spill_stores(k.asm["ptx"], arch, fn.__name__) if stack or local else 0
            in_loop = local_accesses_in_loops(_sass(k.asm["cubin"]))[0] if spill else 0
            acc = global_access_bits(k.asm["ptx"])
            row.update(seconds=time.perf_counter() - t0, regs=regs, stack=stack, local=local,
                       spill=spill, spill_in_loop=in_loop, smem=k.metadata.shared,
                       num_warps=k.metadata.num_warps,
                       ld=dict(acc["ld"]), st=dict(acc["st"]), error="")
            rows.append(row)
    return rows


def unique_launches(arch):
    """Indices of ``_LAUNCHES`` that Triton compiles separately for ``arch``."""
    kernels = {fn for fn, *_ in _LAUNCHES}
    seen, keep = set(), []
    with _target(arch, kernels):
        for i, (fn, grid, args, kwargs, _) in enumerate(_LAUNCHES):
            key = _spec_key(fn, args, kwargs)
            if key not in seen:
                seen.add(key)
                keep.append(i)
    return keep


# ---------------------------------------------------------------- report
def _bits(counter):
    return ",".join(f"{b}x{n}" for b, n in sorted(counter.items(), reverse=True)) or "-"


def summary(rows):
    """Per kernel and data dtype: variants, register range per target, worst spill, shared
    memory, and the global load/store widths (bits x instructions, summed over the variants of
    the first target)."""
    groups = collections.defaultdict(list)
    for r in rows:
        if not r["error"]:
            groups[(r["kernel"], r["dtype"])].append(r)
    archs = sorted({r["arch"] for r in rows}, reverse=True)
    table = []
    for (kernel, dtype), rs in sorted(groups.items()):
        row = {"kernel": kernel, "dtype": dtype,
               "variants": len([r for r in rs if r["arch"] == archs[0]])}
        for a in archs:
            regs = [r["regs"] for r in rs if r["arch"] == a]
            row[f"regs {a}"] = f"{min(regs)}-{max(regs)}" if regs else "-"
        first = [r for r in rs if r["arch"] == archs[0]]
        row.update({
            "spill B": max(r["spill"] for r in rs), "stack B": max(r["stack"] for r in rs),
            "smem B": max(r["smem"] for r in rs),
            "ld bits": _bits(sum((collections.Counter(r["ld"]) for r in first),
                                 collections.Counter())),
            "st bits": _bits(sum((collections.Counter(r["st"]) for r in first),
                                 collections.Counter()))})
        table.append(row)
    return table


def markdown(table):
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastpicard.kernels.aot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="90,80", help="compute capabilities, e.g. 90,80")
    p.add_argument("--set", default="ci", choices=["ci", "full"], dest="which")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="compiler processes (default: all cores)")
    p.add_argument("--only", default="", help="comma-separated kernel names (default: all)")
    p.add_argument("--csv", default="", help="write one row per compiled variant here")
    p.add_argument("--markdown", default="", help="write the summary table here")
    p.add_argument("--allow-spills-outside-loops", action="store_true",
                   help="fail only on spills with a local load/store inside a loop of the "
                        "SASS (the others run once per program; each is still listed)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("fastpicard.kernels.aot: unset TRITON_INTERPRET (it replaces the "
                         "compiler with the CPU interpreter)")
    import triton

    t0 = time.perf_counter()
    archs = [int(a) for a in args.arch.split(",")]
    only = tuple(k for k in args.only.split(",") if k)
    # one torch thread: the capture is small, and no OpenMP pool may exist when workers fork
    torch.set_num_threads(1)
    _LAUNCHES[:] = capture(args.which, only)
    jobs = []
    for arch in archs:
        keep = unique_launches(arch)
        print(f"sm_{arch}: {len(_LAUNCHES)} launches recorded, {len(keep)} distinct "
              "specializations", flush=True)
        jobs += [(arch, i) for i in keep]
    n = max(1, min(args.jobs, len(jobs)))
    chunks = [jobs[k::n] for k in range(n)]
    rows = []
    ctx = multiprocessing.get_context("fork")  # workers inherit the capture
    with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as pool:
        futs = [pool.submit(compile_jobs, arch, [i for a, i in chunk if a == arch])
                for chunk in chunks for arch in archs]
        for f in concurrent.futures.as_completed(futs):
            rows += f.result()
    rows.sort(key=lambda r: (r["kernel"], r["arch"], r["dtype"], r["constexprs"]))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["kernel", "arch", "dtype", "constexprs", "regs",
                                              "stack", "local", "spill", "spill_in_loop", "smem",
                                              "num_warps",
                                              "ld", "st", "seconds", "error", "example"])
            w.writeheader()
            for r in rows:
                w.writerow({k: (_bits(v) if k in ("ld", "st") else v) for k, v in r.items()})
    errors = [r for r in rows if r["error"]]
    spills = [r for r in rows if not r["error"] and r["spill"]]
    table = summary(rows)
    print(f"triton {triton.__version__}, torch {torch.__version__}, set {args.which}: "
          f"{len(rows)} variants compiled in {time.perf_counter() - t0:.0f} s "
          f"({n} processes)")
    print(f"ld/st bits: width of each global load/store instruction x count, summed over the "
          f"variants for sm_{archs[0]} (128 = one 16-byte access); spill = ptxas spill-store bytes")
    print(markdown(table))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(table) + "\n")
    for r in errors:
        print(f"COMPILE ERROR {r['kernel']} {r['arch']} {r['dtype']} {r['constexprs']}: "
              f"{r['error']} ({r['example']})")
    for r in spills:
        where = (f"{r['spill_in_loop']} local loads/stores inside loops" if r["spill_in_loop"]
                 else "all outside loops (once per program)")
        print(f"SPILL {r['kernel']} {r['arch']} {r['dtype']} {r['constexprs']}: "
              f"{r['spill']} B spill stores, {r['regs']} registers, {where}")
    in_loops = [r for r in spills if r["spill_in_loop"]]
    print(f"{len(errors)} compile errors, {len(spills)} variants with spills "
          f"({len(in_loops)} with spill code inside a loop)")
    failing = in_loops if args.allow_spills_outside_loops else spills
    return 1 if errors or failing else 0


if __name__ == "__main__":
    sys.exit(main())
