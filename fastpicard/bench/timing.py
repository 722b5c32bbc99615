"""Timing helpers shared by the benchmarks: interleaved medians, device sync, CSV rows."""
from __future__ import annotations

import csv
import os
import platform
import random
import statistics
import time
from datetime import datetime, timezone

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_samples(cases: dict, device, reps: int = 20, warmup: int = 3,
                        min_time: float = 0.0, clock=time.perf_counter) -> dict:
    """Seconds per call of each case, ``reps`` samples each. Cases run interleaved, so load
    spikes and thermal drift hit every case alike, in a fresh random order each repetition:
    a case that always followed the same heavy peer would always start with the caches that
    peer left. ``min_time`` raises the calls per sample for very fast cases."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync(device)
    inner = {}
    for name, fn in cases.items():  # calls per sample, so that one sample lasts >= min_time
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, int(min_time / dt)) if min_time else 1
    order, rng = list(cases), random.Random(0)
    samples = {name: [] for name in cases}
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            fn, k = cases[name], inner[name]
            sync(device)
            t0 = clock()
            for _ in range(k):
                fn()
            sync(device)
            samples[name].append((clock() - t0) / k)
    return samples


def interleaved_medians(cases: dict, device, reps: int = 20, warmup: int = 3,
                        min_time: float = 0.0) -> dict:
    """Median seconds per call of each case (see :func:`interleaved_samples`)."""
    samples = interleaved_samples(cases, device, reps, warmup, min_time)
    return {name: statistics.median(v) for name, v in samples.items()}


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def environment() -> dict:
    return {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
    }


def append_csv(path: str, rows: list[dict]) -> None:
    if not path or not rows:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = environment()
    fields = ["time", "bench"] + list(env) + sorted({k for r in rows for k in r} - {"bench"})
    if os.path.exists(path):  # a file from an older layout is kept aside, never mixed
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header != fields:
            os.replace(path, path + ".old")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"time": stamp, **env, **r})


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)
