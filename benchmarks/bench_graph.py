"""One PIGN graph step (fused spmm_update vs PyG / torch.sparse peers), forward and
forward+backward. Same as ``python -m fastpicard.bench graph [options]``; see
fastpicard/bench/graph.py for the cases and options."""
import sys

from fastpicard.bench.__main__ import main

if __name__ == "__main__":
    main(["graph", *sys.argv[1:]])
