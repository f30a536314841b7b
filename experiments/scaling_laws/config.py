"""Scaling laws on the CPU ladder (Kaplan et al. 2020, "Scaling Laws for Neural Language
Models"; Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"): a sweep of
configs/ladder.py's CPU rungs on the embedded corpus, fitted by `--mode=analyze`. This file is
a sweep file (`run.py --sweep` takes it with its variant) built from configs/sweeps/.

  python run.py --sweep=experiments/scaling_laws/config.py:cpu --workdir=runs/scaling_laws
  python run.py --mode=analyze --workdir=runs/scaling_laws
  python -m jtrans.experiments.check scaling_laws runs/scaling_laws
Expected (`cpu`: configs/sweeps/cpu_lr_size.py, five rungs from 13k to 1.5M non-embedding
parameters at the planner's learning rate and half of it, 2M bytes each, 30 minutes): with
each size's best rate every rung beats the one below it, L(N) = 1.091 + 26.8 N^-0.409,
R^2 0.9985. `isoflop` (configs/sweeps/cpu_isoflop.py, 12 runs at four budgets, 30 minutes):
Chinchilla's approach 3, alpha = 0.38 [0.11, 0.79], beta = 1.16 [0.76, 1.39], R^2 0.9895.
`ci`: the three smallest rungs on 512k bytes each, for the test suite (1m21s here).
"""

import ml_collections

from configs import ladder
from configs.sweeps import cpu_isoflop, cpu_lr_size

VARIANTS = {
  "cpu": cpu_lr_size.get_sweep,
  "isoflop": cpu_isoflop.get_sweep,
  "ci": lambda: [ladder.overrides(name, tokens=512_000) for name in ("13k", "100k", "336k")],
}


def _variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise ValueError(f"scaling_laws: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  return variant


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """The sweep's base config (a point's overrides make each rung)."""
  c = ladder.sweep_base(async_checkpoints=False)
  c.experiment.name, c.experiment.variant = "scaling_laws", _variant(variant)
  return c


def get_sweep(variant: str = "cpu") -> list[dict]:
  return VARIANTS[_variant(variant)]()
