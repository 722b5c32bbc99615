"""Reproductions of the paper's tables: ``python -m fastpicard.reproduce <table> [options]``.

Each table is a module ``fastpicard.reproduce.<table>`` with ``add_arguments(parser)`` and
``run(args)``; shared output handling (progress, JSON of all runs, markdown table beside the
paper's numbers, plots, time and machine) lives in :mod:`fastpicard.reproduce.report`.
"""
