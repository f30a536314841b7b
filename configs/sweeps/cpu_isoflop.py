"""IsoFLOP sweep on the CPU (Chinchilla approaches 2 and 3): four compute budgets, and at each budget
every ladder rung from 13k to 1.5M parameters that gets at least 1 token per parameter, trained
on as many tokens of the embedded corpus as the budget buys.

Run (29m35s here on 2 cores of an AMD EPYC, 2026-12-07, with compiles on one core beside it
for about half of it):
  python run.py --sweep=configs/sweeps/cpu_isoflop.py --workdir=runs/cpu_isoflop
  python run.py --mode=analyze --workdir=runs/cpu_isoflop
Expected (measured: 12 points, 2 at 3e11 and 3-4 at each larger budget): Chinchilla's approach
3 over all points, L = E + A/N^alpha + B/D^beta with E = 0.80 [0.04, 0.97], A = 23.8
[4.0, 885], B = 5.0e6 [3.0e4, 1.2e8], alpha = 0.38 [0.11, 0.79], beta = 1.16 [0.76, 1.39]
(95% bootstrap intervals, 50 of 50 resamples fitted), R^2 0.9895. Hoffmann et al.'s alpha =
0.34 lies inside its interval; beta far above their 0.28: the training text of the embedded
corpus is about 0.42M bytes, which the smallest rung reads up to 175 times, so D here is
mostly repeated data, unlike Chinchilla's. Approach 2
(parabolas, isoflop.png): N_opt ~ C^0.68, D_opt ~ C^0.38 (a + b = 1.07), but from 3 points a
budget and with no interval (fewer than 90% of resamples fit); the 1e12 parabola's minimum
(1.20) lies below every one of its points, so read approach 2 as a sketch. The best loss of
each budget falls with C: 1.66 (3e11), 1.50, 1.24, 1.087 (1e13).
"""

from configs import ladder

BUDGETS = [3e11, 1e12, 3e12, 1e13]  # FLOPs per run.
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
