"""Scaling laws: plan a ladder of runs, sweep it, fit the laws, report them.

- `planner.py`: a compute budget -> the ladder rungs, tokens, steps, batch and learning rate.
- `sweep.py`: sweep files -> points, and the resumable, failure-recording sweep runner.
- `fits.py`: L(N), L(C), Chinchilla's approaches 2 and 3, bootstrap intervals (pure numpy/scipy).
- `report.py`, `plots.py`: `run.py --mode=analyze`, a finished sweep -> scaling.json/.md and PNGs.

Nothing is imported here: building a sweep must not load JAX (only counting and training do).
"""
