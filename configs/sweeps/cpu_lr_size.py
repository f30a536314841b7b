"""Learning rate x size on the CPU: the three largest rungs of configs/sweeps/cpu_ladder.py
(336k, 793k, 1.5M non-embedding parameters) x three peak learning rates, each on the same 2M
tokens of the embedded corpus with cpu_ladder's schedule; only optim.lr changes.

Run (about 50 minutes on an idle 2-core CPU, by --dry_run's estimate):
  python run.py --sweep=configs/sweeps/cpu_lr_size.py --workdir=runs/cpu_lr_size
  python run.py --mode=analyze --workdir=runs/cpu_lr_size
Expected (not yet run here): a U-shaped loss in lr per size; whether the 1.5M rung, which
trails 793k in cpu_ladder at the planner's lr (6.8e-3), overtakes it at a lower one. `analyze`
fits L(N) on the best lr of each size (scaling.md lists every run).
"""

from configs import ladder
from jtrans.scaling import sweep

RUNGS = ["336k", "793k", "1.5M"]
LEARNING_RATES = [2.5e-3, 5e-3, 1e-2]
TOKENS = 2_000_000


def get_config():
  return ladder.sweep_base(async_checkpoints=False)


def get_sweep() -> list[dict]:
  sizes = [ladder.overrides(name, tokens=TOKENS) for name in RUNGS]
  return sweep.product(sizes, sweep.axis("optim.lr", LEARNING_RATES))
