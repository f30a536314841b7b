"""Size ladder on the CPU at a fixed 2 tokens per parameter: five rungs of configs/ladder.py
(13k to 1.5M non-embedding parameters), each on D = 2 N tokens of the embedded corpus.

Run (about 16 minutes on an idle 2-core CPU):
  python run.py --sweep=configs/sweeps/cpu_ladder_ratio.py --workdir=runs/cpu_ladder_ratio
  python run.py --mode=analyze --workdir=runs/cpu_ladder_ratio
Expected (measured for the first four rungs, 2 CPU cores shared with other jobs): eval loss
3.268, 2.890, 2.091 and 1.285 nats/byte for 13k, 100k, 336k and 793k parameters. L(N) =
E + A N^-alpha fits them badly (R^2 = 0.78): at 2 tokens per parameter the small rungs see
26k and 200k tokens and stay near the unigram entropy (3.25), so the curve bends the other
way. This is why configs/sweeps/cpu_ladder.py trains every size on the same tokens instead;
at Chinchilla's 20 tokens per parameter (configs/sweeps/ladder.py) a ladder is the right
design, but the CPU cannot afford it beyond a few hundred thousand parameters.
"""

from configs import ladder

RUNGS = ["13k", "100k", "336k", "793k", "1.5M"]
TOKENS_PER_PARAM = 2.0


def get_config():
  return ladder.sweep_base(async_checkpoints=False)


def get_sweep() -> list[dict]:
  return [ladder.overrides(name, TOKENS_PER_PARAM) for name in RUNGS]
