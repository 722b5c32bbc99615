"""What every reproduction writes: a JSON of all runs (rewritten after each run, so an
interrupted table keeps what finished), a markdown table beside the paper's numbers, PNG plots,
the total time and the machine."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm


def machine() -> dict:
    """A short description of where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def load_average():
    """The machine's 1/5/15-minute load averages (None where the OS does not tell): the
    machines these tables run on are often shared."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def fmt_load(load) -> str:
    return "n/a" if load is None else "/".join(f"{v:.1f}" for v in load)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt(values, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` of values times scale (e.g. scale=100 for accuracy in %)."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def progress(iterable=None, **kwargs):
    """tqdm progress bar (on stderr; tqdm is a dependency)."""
    return tqdm(iterable, **kwargs)


class Report:
    """Output folder of one reproduction command.

    ``add_run(record)`` appends a dict to ``runs.json``; ``write_markdown(text)`` writes
    ``table.md`` (with the command, total time and machine appended); ``figure(name)`` returns
    the path for a PNG; ``finish()`` writes ``summary.json`` and prints where everything is."""

    def __init__(self, table: str, out: str | os.PathLike, args=None):
        self.table = table
        self.dir = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        self.command = "python -m fastpicard.reproduce " + " ".join([table] + sys.argv[2:]) \
            if sys.argv and sys.argv[0].endswith("__main__.py") else f"reproduce {table}"
        self.settings = {k: v for k, v in vars(args).items()} if args is not None else {}
        self.machine = machine()
        self.load_start = load_average()
        self.runs: list[dict] = []

    def add_run(self, record: dict) -> None:
        self.runs.append(record)
        self._write_json("runs.json", {"table": self.table, "command": self.command,
                                       "settings": self.settings, "machine": self.machine,
                                       "runs": self.runs})

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def figure(self, name: str) -> Path:
        return self.dir / name

    def write_markdown(self, body: str) -> Path:
        m = self.machine
        where = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}" + (
            f", {m['gpu']}" if "gpu" in m else "")
        load = load_average()
        busy = "" if load is None else (
            f" Load average (1/5/15 min) at the start {fmt_load(self.load_start)}, at the end "
            f"{fmt_load(load)} on {m['cores']} cores.")
        text = (body.rstrip() + "\n\n" + f"Command: `{self.command}`  \n"
                f"Total time: {self.elapsed() / 60:.1f} min on {where}.{busy}\n")
        path = self.dir / "table.md"
        path.write_text(text)
        return path

    def finish(self) -> None:
        self._write_json("summary.json", {"table": self.table, "command": self.command,
                                          "settings": self.settings, "machine": self.machine,
                                          "total_seconds": round(self.elapsed(), 1),
                                          "num_runs": len(self.runs),
                                          "load_average_start": self.load_start,
                                          "load_average_end": load_average()})
        print(f"\n{self.table}: {len(self.runs)} runs in {self.elapsed() / 60:.1f} min; "
              f"results in {self.dir}/ (runs.json, table.md, *.png)")

    def _write_json(self, name, obj):
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        tmp.replace(self.dir / name)  # never a half-written file
