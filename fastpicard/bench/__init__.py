"""Kernel and model microbenchmarks: ``python -m fastpicard.bench <name>``. Each benchmark
module exposes ``add_arguments(parser)`` and ``run(args)``; timings are medians of interleaved
repetitions, reported as ratios against the peers measured in the same run."""
