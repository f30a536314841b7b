"""Size ladder on the CPU: five rungs of configs/ladder.py, 13k to 1.5M non-embedding
parameters (121x), every one trained on the same 2M tokens (1953 steps of 16 x 64 bytes)
of the embedded corpus: Kaplan et al.'s L(N), model size the only variable.

Run (about 15 minutes on an idle 2-core CPU; --dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_ladder.py --workdir=runs/cpu_ladder --dry_run
  python run.py --sweep=configs/sweeps/cpu_ladder.py --workdir=runs/cpu_ladder
  python run.py --mode=analyze --workdir=runs/cpu_ladder
Expected (measured: 18 minutes, run under `nice -n 19` beside another job, killed once and
relaunched): eval loss 1.659, 1.328, 1.255, 1.195 and 1.269 nats/byte for 13k, 100k, 336k,
793k and 1.5M; L(N) = 1.187 + 125 N^-0.590 (R^2 = 0.970) and on the compute frontier L(C) =
1.132 + 2.48e6 C^-0.584 (R^2 = 0.997). The 1.5M rung trails 793k at every evaluation (not
overfitting: its train loss is as high): its lr (the planner's 6.8e-3) was too high.
configs/sweeps/cpu_lr_size.py runs every rung at that lr and half of it: at half, 1.5M reaches
1.177 and 793k 1.194, every rung beats the one below, and L(N) fits with R^2 = 0.9985.

Why one token budget rather than a fixed tokens-per-parameter ratio: the 1.5M rung alone
costs 9.8 MFLOP/token, so 20 tokens per parameter (3e14 FLOPs) would take ~2 hours here, and
at an affordable 2 the small rungs see too few tokens to leave the unigram plateau
(configs/sweeps/cpu_ladder_ratio.py: R^2 = 0.78). With D fixed, Chinchilla's L(N, D) =
E + A/N^alpha + B/D^beta is E' + A/N^alpha in N, the law that `analyze` fits. Batch (16 rows,
CPU_BATCH_LIMITS in configs/ladder.py) and lr (the planner's rule in C) as in the ladder.
"""

from configs import ladder

RUNGS = ["13k", "100k", "336k", "793k", "1.5M"]
TOKENS = 2_000_000


def get_config():
  return ladder.sweep_base(async_checkpoints=False)


def get_sweep() -> list[dict]:
  return [ladder.overrides(name, tokens=TOKENS) for name in RUNGS]
