"""IsoFLOP sweep for accelerators (Chinchilla approach 2 and 3), 1e18 to 1e20 FLOPs: at each
budget six ladder rungs from 12M to 1.4B non-embedding parameters around the Chinchilla
optimum, on a real corpus (lm1b, byte-level; prepare it once with `tfds build lm1b` into
--config.data.data_dir). Batch and learning rate from the planner (DeepSeek LLM's rules).

One job per point (see the README's "Scaling laws" for a SLURM or Kubernetes job array):
  python run.py --sweep=configs/sweeps/isoflop.py --workdir=gs://bucket/isoflop --dry_run
  python run.py --sweep=configs/sweeps/isoflop.py --workdir=gs://bucket/isoflop --sweep_index=0
  python run.py --mode=analyze --workdir=gs://bucket/isoflop
Expected (not run: needs an accelerator pod): approach 2 exponents a ~ b ~ 0.5 as in Hoffmann
et al. (their Table 2: a = 0.49, b = 0.51 for approach 2), scaled to byte-level tokens.
"""

from configs import ladder

BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20]
RUNGS = ["12M", "21M", "50M", "170M", "403M", "1.4B"]


def get_config():
  return ladder.sweep_base("lm1b")


def get_sweep() -> list[dict]:
  return [ladder.overrides(name, budget=budget) for budget in BUDGETS for name in RUNGS]
