"""Where the benchmarks get their data: ``fastpicard.datasets`` only, from ``--data DIR`` or
``$FASTPICARD_DATA`` (a folder holding ``planetoid/<Name>/raw/ind.*``, the Planetoid raw files as
PyG lays them out). Cora and CiteSeer ship inside fastpicard and need neither."""
from __future__ import annotations

import os
from pathlib import Path

from ..datasets import planetoid

EMBEDDED = ("cora", "citeseer")


def add_data_argument(p):
    p.add_argument("--data", default=os.environ.get("FASTPICARD_DATA") or None,
                   help="folder holding planetoid/<Name>/raw (default: $FASTPICARD_DATA); "
                        "Cora and CiteSeer ship with fastpicard")


def load_planetoid(name: str, data, normalize: bool = False):
    """The Planetoid dataset ``name`` (a GraphData), or None, with a line saying why, when it
    does not ship with fastpicard and no data folder was given."""
    if name.lower() in EMBEDDED:
        return planetoid(name, normalize=normalize)
    if not data:
        print(f"skipping {name}: it does not ship with fastpicard; pass --data DIR (with "
              f"DIR/planetoid/{name}/raw) or set FASTPICARD_DATA", flush=True)
        return None
    return planetoid(name, root=Path(data) / "planetoid", normalize=normalize)
