"""Learning rate x size on the CPU: every rung of configs/sweeps/cpu_ladder.py (13k to 1.5M
non-embedding parameters) at the planner's peak learning rate and at half of it, each on the
same 2M tokens of the embedded corpus with cpu_ladder's schedule; only optim.lr changes.
`analyze` fits L(N) on the best learning rate of each size (scaling.md lists every run).

Run (30 minutes on an idle 2-core CPU, measured; --dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_lr_size.py --workdir=runs/cpu_lr_size
  python run.py --mode=analyze --workdir=runs/cpu_lr_size
Why: at the planner's rate (DeepSeek's rule in C: 1.16e-2 for 13k down to 6.8e-3 for 1.5M) the
1.5M rung of cpu_ladder ended worse than 793k (1.269 against 1.195 nats/byte).
Expected (measured 2026-12-07, eval nats/byte at the last step; half the planner's lr / the planner's):
13k 1.730 / 1.651, 100k 1.389 / 1.334, 336k 1.260 / 1.225, 793k 1.194 / 1.201, 1.5M 1.177 /
1.199. The planner's rate is the better one up to 336k and half of it from 793k up; with each
size's best rate every rung beats the one below it, and `analyze` fits L(N) = 1.091 + 26.8
N^-0.409 (R^2 = 0.9985) and L(C) = 1.12 + 8.19e5 C^-0.541 (R^2 = 0.999); with five sizes
fewer than 90% of bootstrap resamples fit, so no intervals are printed.
"""

from configs import ladder

RUNGS = ["13k", "100k", "336k", "793k", "1.5M"]
LR_FACTORS = [0.5, 1.0]  # Times the planner's peak learning rate for the rung.
TOKENS = 2_000_000


def get_config():
  return ladder.sweep_base(async_checkpoints=False)


def get_sweep() -> list[dict]:
  points = []
  for name in RUNGS:
    rung = ladder.overrides(name, tokens=TOKENS)
    points += [{**rung, "optim.lr": factor * rung["optim.lr"]} for factor in LR_FACTORS]
  return points
