"""IsoFLOP sweep on the CPU (Chinchilla approach 2): three compute budgets, and at each budget
every ladder rung from 13k to 1.5M parameters that gets at least 1 token per parameter, trained
on as many tokens of the embedded corpus as the budget buys.

Run (about 35 minutes on an idle 2-core CPU, by --dry_run's estimate):
  python run.py --sweep=configs/sweeps/cpu_isoflop.py --workdir=runs/cpu_isoflop
  python run.py --mode=analyze --workdir=runs/cpu_isoflop
Expected (estimated, not yet run here): one loss-vs-N parabola per budget (isoflop.png) whose
minimum moves to larger N as C grows; approach 2 then gives N_opt ~ C^a and D_opt ~ C^b with
a + b near 1, and approach 3 has N and D varying apart, so it is fitted too.
"""

from configs import ladder

BUDGETS = [1e12, 3e12, 1e13]  # FLOPs per run.
RUNGS = ["13k", "100k", "336k", "793k", "1.5M"]


def get_config():
  return ladder.sweep_base()


def get_sweep() -> list[dict]:
  points = []
  for budget in BUDGETS:
    for name in RUNGS:
      rung = ladder.rung(name)
      if budget / rung.flops_per_token >= rung.non_embedding_params:  # D >= N.
        points.append(ladder.overrides(name, budget=budget))
  return points
