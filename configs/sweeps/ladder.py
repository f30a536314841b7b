"""Size ladder at Chinchilla's 20 tokens per parameter, for accelerators: six rungs of
configs/ladder.py from 12M to 1.4B non-embedding parameters, each its own compute-optimal run
(D = 20 N; batch and lr from the planner), on lm1b at byte level (prepare it once with
`tfds build lm1b` into --config.data.data_dir).

One job per point (see the README's "Scaling laws" for a SLURM or Kubernetes job array):
  python run.py --sweep=configs/sweeps/ladder.py --workdir=gs://bucket/ladder --dry_run
  python run.py --sweep=configs/sweeps/ladder.py --workdir=gs://bucket/ladder --sweep_index=0
  python run.py --mode=analyze --workdir=gs://bucket/ladder
Expected (not run: needs accelerators, 2e16 to 2e20 FLOPs per point): loss falling with N
along the compute-optimal frontier, fitted by L(N) and L(C) in `analyze`; losses are per
byte, so their constants are not comparable with papers that count BPE tokens.
"""

from configs import ladder

RUNGS = ["12M", "21M", "50M", "170M", "403M", "1.4B"]


def get_config():
  return ladder.sweep_base("lm1b")


def get_sweep() -> list[dict]:
  return [ladder.overrides(name, tokens_per_param=20) for name in RUNGS]
