"""Compute planner: from a FLOP budget to a model size, tokens, steps, batch and learning rate.

Chinchilla (Hoffmann et al. 2022) trains a compute-optimal model on about 20 tokens per
parameter; with C = f(N) x D FLOPs (f = training FLOPs per token, about 6N) a budget C
fixes N and D. We pick among a fixed list of candidate models (the size ladder, rungs),
so the plan names the rungs whose tokens-per-parameter ratio at budget C brackets the target.

Batch size and learning rate follow the compute-scaling rules of DeepSeek LLM (Bi et al. 2024,
eq. 1, fitted on 1e17..3e20 FLOPs; below that range they are extrapolations):
  B_opt = 0.2920 C^0.3271 tokens,   lr_opt = 0.3118 C^-0.1250.
N here is the non-embedding parameter count (Kaplan et al. 2020); C counts every matmul
(`flops.train_flops_per_token`: 6 x matmul parameters + the attention term).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import ml_collections

from jtrans import flops, objectives
from jtrans.models.config import ModelConfig

CHINCHILLA_TOKENS_PER_PARAM = 20.0
MIN_ROWS = 8  # Smallest batch (rows): a multiple of 8 splits over 8 devices (the test mesh).
MIN_STEPS = 100  # The batch shrinks (not below MIN_ROWS) until a run has at least this many steps.


@dataclasses.dataclass(frozen=True)
class Rung:
  """A candidate model: a name, its shape and the row length it trains on."""

  name: str
  model: ModelConfig
  seq_len: int

  @property
  def non_embedding_params(self) -> int:
    return flops.param_counts(self.model).non_embedding

  @property
  def flops_per_token(self) -> float:
    """Training FLOPs per token (forward + backward)."""
    return flops.train_flops_per_token(self.model, self.seq_len)


@dataclasses.dataclass(frozen=True)
class Plan:
  """One training run: `steps` x `batch_size` rows of `seq_len` tokens on `rung`."""

  rung: str
  params: int  # Non-embedding parameters N.
  total_params: int
  flops_per_token: float
  tokens: int  # D = steps x batch_size x seq_len.
  steps: int
  batch_size: int  # Rows per step.
  seq_len: int
  lr: float

  @property
  def flops(self) -> float:
    """C = FLOPs per token x D: the training compute of the run."""
    return self.flops_per_token * self.tokens

  @property
  def tokens_per_param(self) -> float:
    return self.tokens / self.params

  def overrides(self) -> dict[str, float | int]:
    """The dotted config keys that set this plan's schedule (the model shape is the rung's)."""
    return {
      "train.steps": self.steps,
      "train.batch_size": self.batch_size,
      "optim.lr": self.lr,
      "optim.warmup_steps": max(self.steps // 20, 1),
    }


def optimal_batch_tokens(budget: float) -> float:
  """DeepSeek LLM's B_opt(C) in tokens per step for a budget of C FLOPs."""
  return 0.2920 * budget**0.3271


def optimal_lr(budget: float) -> float:
  """DeepSeek LLM's peak learning rate for AdamW with a warm-up and a decay, at C FLOPs."""
  return 0.3118 * budget**-0.1250


def _power_of_two_at_most(x: float) -> int:
  return 2 ** max(int(math.floor(math.log2(max(x, 1.0)))), 0)


def plan_tokens(
  rung: Rung,
  tokens: float,
  budget: float | None = None,
  *,
  max_rows: int | None = None,
  min_rows: int = MIN_ROWS,
  min_steps: int = MIN_STEPS,
) -> Plan:
  """The run that trains `rung` on about `tokens` tokens (rounded to whole steps).

  `budget` (FLOPs) sets batch and learning rate; by default it is this run's own compute.
  The batch is B_opt(C) in rows (a power of two, at most `max_rows`), halved while the run
  would have fewer than `min_steps` steps, but never below `min_rows`.
  """
  budget = budget or rung.flops_per_token * tokens
  rows = max(_power_of_two_at_most(optimal_batch_tokens(budget) / rung.seq_len), min_rows)
  rows = min(rows, max_rows) if max_rows else rows
  while rows > min_rows and tokens / (rows * rung.seq_len) < min_steps:
    rows //= 2  # Short runs: more, smaller steps rather than a handful of huge ones.
  steps = max(int(round(tokens / (rows * rung.seq_len))), 1)
  counts = flops.param_counts(rung.model)
  return Plan(
    rung=rung.name,
    params=counts.non_embedding,
    total_params=counts.total,
    flops_per_token=rung.flops_per_token,
    tokens=steps * rows * rung.seq_len,
    steps=steps,
    batch_size=rows,
    seq_len=rung.seq_len,
    lr=float(f"{optimal_lr(budget):.3g}"),
  )  # 3 digits: readable configs.


def plan_ratio(
  rung: Rung, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM, **batch_limits
) -> Plan:
  """`rung` trained on `tokens_per_param` x N tokens (`batch_limits`: see `plan_tokens`)."""
  return plan_tokens(rung, tokens_per_param * rung.non_embedding_params, **batch_limits)


def plan_budget(rung: Rung, budget: float, **batch_limits) -> Plan:
  """`rung` trained on as many tokens as `budget` FLOPs buy (an IsoFLOP point)."""
  return plan_tokens(rung, budget / rung.flops_per_token, budget, **batch_limits)


def optimal_params(budget: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
  """N with 6 N x (ratio x N) = C: the compute-optimal size if any size were available."""
  return math.sqrt(budget / (6.0 * tokens_per_param))


def plan(
  budget: float, rungs: Sequence[Rung], tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> list[Plan]:
  """The rungs whose ratio D/N at `budget` brackets `tokens_per_param`, each with its plan.

  One plan when a rung hits the ratio within 10% or every rung lies on one side of it; else
  the two neighbours (one over-, one under-trained), best (nearest in log ratio) first.
  """
  if budget <= 0 or tokens_per_param <= 0:
    raise ValueError(
      f"--flops={budget} and --tokens_per_param={tokens_per_param} must be positive."
    )
  plans = sorted((plan_budget(r, budget) for r in rungs), key=lambda p: p.params)
  gap = [math.log(p.tokens_per_param / tokens_per_param) for p in plans]
  best = min(range(len(plans)), key=lambda i: abs(gap[i]))
  if abs(gap[best]) < math.log(1.1):
    return [plans[best]]
  # D/N falls as N grows: the neighbour across the target is one rung up or down.
  other = best + 1 if gap[best] > 0 else best - 1
  if not 0 <= other < len(plans):
    return [plans[best]]
  return [plans[best], plans[other]]


def format_plans(budget: float, plans: Sequence[Plan], tokens_per_param: float | None) -> str:
  """A Markdown table of `plans`, under a line with the budget and the ideal size when
  `tokens_per_param` is given."""
  lines = (
    [
      f"Budget C = {budget:.3g} FLOPs; at {tokens_per_param:g} tokens/parameter the ideal "
      f"non-embedding size is N = sqrt(C / (6 x {tokens_per_param:g})) = "
      f"{optimal_params(budget, tokens_per_param):.3g}.",
      "",
    ]
    if tokens_per_param
    else []
  )
  lines += [
    "| rung | N (non-emb.) | total params | D tokens | D/N | steps | batch x seq | lr | C FLOPs |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for p in plans:
    lines.append(
      f"| {p.rung} | {p.params:,} | {p.total_params:,} | {p.tokens:.3g} | "
      f"{p.tokens_per_param:.1f} | {p.steps:,} | {p.batch_size} x {p.seq_len} | "
      f"{p.lr:.2e} | {p.flops:.3g} |"
    )
  return "\n".join(lines)


# ---------------------------------------------------------------- a config's cost


# Assumed model FLOPs utilisation for time estimates: the README measures 27% for the 0.8M
# model on this 2-core CPU (float32) and 46% for 10.9M; accelerators typically reach 40%.
ASSUMED_MFU = {"cpu": 0.25}
DEFAULT_MFU = 0.4
OVERHEAD_SECONDS = 15.0  # Per run: start-up, compiling, the evaluations and checkpoints.


def plan_config(config, name: str = "config") -> Plan:
  """The plan that a full config (`ml_collections.ConfigDict` or its JSON dict) trains.

  Tokens are the positions the model processes per example, as --mode=compile counts them:
  data.seq_len for language models, source + target for seq2seq, patches (+ the class token)
  for a ViT (197 at 224 x 224 in 16 x 16 patches, not data.seq_len).
  """
  model = ModelConfig.from_config(config["model"])
  counts = flops.param_counts(model)
  train = config["train"]
  seq_len = objectives.positions_per_example(ml_collections.ConfigDict(config), model)
  return Plan(
    rung=name,
    params=counts.non_embedding,
    total_params=counts.total,
    flops_per_token=flops.train_flops_per_token(model, seq_len),
    tokens=train["steps"] * train["batch_size"] * seq_len,
    steps=train["steps"],
    batch_size=train["batch_size"],
    seq_len=seq_len,
    lr=config["optim"]["lr"],
  )


def estimate_seconds(
  plan: Plan, peak_flops: float, mfu: float, overhead: float = OVERHEAD_SECONDS
) -> float:
  """Wall time of `plan` at `mfu` of `peak_flops` FLOP/s (all devices), plus a fixed overhead."""
  return plan.flops / (peak_flops * mfu) + overhead


def machine_speed() -> tuple[float, float, str]:
  """(peak FLOP/s of all local devices, assumed MFU, a sentence saying where both come from)."""
  import jax  # Here: planning a budget needs no devices.

  platform = jax.devices()[0].platform
  # Simulated CPU devices share one host's cores: its measured peak is the whole machine's.
  peak = flops.peak_flops_per_device() * (1 if platform == "cpu" else jax.device_count())
  mfu = ASSUMED_MFU.get(platform, DEFAULT_MFU)
  how = "measured float32 matmul peak" if platform == "cpu" else "bf16 peak"
  return (
    peak,
    mfu,
    (
      f"{jax.device_count()} {platform} device(s), {how} {peak / 1e9:,.0f} "
      f"GFLOP/s x assumed MFU {mfu:.0%} + {OVERHEAD_SECONDS:.0f} s per run"
    ),
  )


def format_budget(budget: float, rungs: Sequence[Rung], tokens_per_param: float) -> str:
  """`run.py --mode=plan --flops=C`: the plan table and the command for each chosen rung."""
  plans = plan(budget, rungs, tokens_per_param)
  lines = [format_plans(budget, plans, tokens_per_param), "", "Commands:"]
  for p in plans:
    keys = " ".join(
      f"--config.{k}={v:.3g}" if isinstance(v, float) else f"--config.{k}={v}"
      for k, v in p.overrides().items()
    )
    lines.append(
      f"  python run.py --config=configs/ladder.py:{p.rung} --workdir=runs/{p.rung} {keys}"
    )
  return "\n".join(lines)


def format_config(config) -> str:
  """`run.py --mode=plan --config=...`: parameter counts (formula and real tree), FLOPs per
  token by each count, and the run's D, C and estimated time on this machine."""
  model = ModelConfig.from_config(config.model)
  counts, tree = flops.param_counts(model), flops.tree_param_counts(model)
  p = plan_config(config)
  seq_len = p.seq_len  # Positions per example (a ViT's patches, seq2seq's two sides).
  peak, mfu, how = machine_speed()
  exact = flops.exact_train_flops_per_token(model, seq_len)
  return "\n".join(
    [
      f"{counts.total:,} parameters, {counts.non_embedding:,} non-embedding "
      f"(parameter tree: {tree.total:,} and {tree.non_embedding:,}).",
      f"Training FLOPs per token at seq_len {seq_len}: {p.flops_per_token:.4g} (6 x matmul "
      f"parameters + 6 L n_ctx d: used for C and MFU); Kaplan 6N + 6 L n_ctx d_attn "
      f"{flops.kaplan_flops_per_token(model, seq_len):.4g}; every matmul exactly {exact:.4g} "
      f"(causal half: {flops.exact_train_flops_per_token(model, seq_len, causal=True):.4g}).",
      "",
      format_plans(p.flops, [p], None),
      "",
      f"Estimated time: {estimate_seconds(p, peak, mfu) / 3600:.3g} h on {how}.",
    ]
  )
