"""A size ladder of decoder-only LMs for scaling-law sweeps, 1.3e4 to 9.8e10 parameters.

One rule gives every shape: n_layer = L, d_model = 32 L (width/depth 32, as GPT-2 large and
XL), d_ff = 4 d_model, head dim 32 while d_model <= 256 (the CPU rungs, which train on rows of
64 bytes like configs/lm.py:tiny; so heads = L) and 64 above (heads = L / 2, so L is even
there; rows of 1024 tokens). Pre-LN GELU blocks with biases, learned positions, tied
embeddings. A rung is named by its non-embedding parameter count N (Kaplan et al. 2020: the
token/position tables left out; biases and norms kept). Each config is the compute-optimal
run of its rung: D = 20 N tokens (Chinchilla), batch and learning rate from the planner
(jtrans/scaling/planner.py: DeepSeek LLM's rules in the compute C; the CPU rungs' batch is capped at
16 rows, see CPU_BATCH_LIMITS).

Run (the 793k rung is configs/lm.py:tiny's shape; about 30 minutes on a 2-core CPU):
  python run.py --config=configs/ladder.py:793k --workdir=runs/ladder_793k
  python run.py --config=configs/ladder.py:13k,tokens_per_param=5 --workdir=runs/ladder_13k
  python run.py --mode=plan --config=configs/ladder.py:793k   # counts, FLOPs/token, D, C, time
Expected: the counts below, equal to the real parameter tree (tests/flops_test.py); losses of
the CPU rungs on the embedded corpus: configs/sweeps/cpu_ladder.py.

| rung | layers | d_model | heads | n_ctx | N non-embedding | total (vocab 259) | train FLOP/token |
|---|---:|---:|---:|---:|---:|---:|---:|
| 13k | 1 | 32 | 1 | 64 | 12,768 | 23,104 | 1.36e+05 |
| 100k | 2 | 64 | 2 | 64 | 100,096 | 120,768 | 7.38e+05 |
| 336k | 3 | 96 | 3 | 64 | 335,712 | 366,720 | 2.25e+06 |
| 793k | 4 | 128 | 4 | 64 | 793,344 | 834,688 | 5.11e+06 |
| 1.5M | 5 | 160 | 5 | 64 | 1,546,720 | 1,598,400 | 9.77e+06 |
| 2.7M | 6 | 192 | 6 | 64 | 2,669,568 | 2,731,584 | 1.67e+07 |
| 6.3M | 8 | 256 | 8 | 64 | 6,318,592 | 6,401,280 | 3.89e+07 |
| 12M | 10 | 320 | 5 | 1024 | 12,330,240 | 12,740,800 | 9.39e+07 |
| 21M | 12 | 384 | 6 | 1024 | 21,294,336 | 21,787,008 | 1.56e+08 |
| 50M | 16 | 512 | 8 | 1024 | 50,439,168 | 51,096,064 | 3.53e+08 |
| 170M | 24 | 768 | 12 | 1024 | 170,110,464 | 171,095,808 | 1.13e+09 |
| 403M | 32 | 1024 | 16 | 1024 | 403,081,216 | 404,395,008 | 2.62e+09 |
| 1.4B | 48 | 1536 | 24 | 1024 | 1,359,916,032 | 1,361,886,720 | 8.61e+09 |
| 3.2B | 64 | 2048 | 32 | 1024 | 3,222,933,504 | 3,225,561,088 | 2.01e+10 |
| 11B | 96 | 3072 | 48 | 1024 | 10,875,475,968 | 10,879,417,344 | 6.7e+10 |
| 26B | 128 | 4096 | 64 | 1024 | 25,776,627,712 | 25,781,882,880 | 1.58e+11 |
| 98B | 200 | 6400 | 100 | 1024 | 98,320,652,800 | 98,328,864,000 | 5.98e+11 |
"""

from __future__ import annotations

import ml_collections

from configs import base
from jtrans.models.config import ModelConfig
from jtrans.scaling import planner, sweep

# name: n_layer. Every other size follows from the rule in the docstring.
RUNGS = {
  "13k": 1,
  "100k": 2,
  "336k": 3,
  "793k": 4,
  "1.5M": 5,
  "2.7M": 6,
  "6.3M": 8,
  "12M": 10,
  "21M": 12,
  "50M": 16,
  "170M": 24,
  "403M": 32,
  "1.4B": 48,
  "3.2B": 64,
  "11B": 96,
  "26B": 128,
  "98B": 200,
}
CPU_MAX_WIDTH = 256  # Up to this width: head dim 32 and 64-byte rows, trainable on a CPU.
# The CPU rungs' batch: at most 16 rows, and fewer (down to 4) while a run would have < 200
# steps. At this scale steps, not batch, limit the loss: 793k on 1.6M tokens reaches 2.48
# nats/byte in 387 steps of 64 rows (DeepSeek's B_opt), and ~1.6 in 1550 steps of 16 rows.
CPU_BATCH_LIMITS = {"max_rows": 16, "min_rows": 4, "min_steps": 200}


def shape(name: str) -> dict[str, int | str]:
  """The dotted config keys that give rung `name` its shape, row length and dtype."""
  if name not in RUNGS:
    raise ValueError(f"configs/ladder.py: rung {name!r} is not one of {list(RUNGS)}.")
  layers = RUNGS[name]
  width = 32 * layers
  cpu = width <= CPU_MAX_WIDTH
  seq_len = 64 if cpu else 1024
  return {
    "model.num_layers": layers,
    "model.embed_dim": width,
    "model.num_heads": width // (32 if cpu else 64),
    "model.mlp_dim": 4 * width,
    "model.max_len": seq_len,
    "data.seq_len": seq_len,
    "model.dtype": "float32" if cpu else "bfloat16",
  }


def rung(name: str, vocab_size: int = 259) -> planner.Rung:
  """Rung `name` as the planner sees it."""
  keys = shape(name)
  model = ModelConfig(
    vocab_size=vocab_size,
    num_layers=keys["model.num_layers"],
    embed_dim=keys["model.embed_dim"],
    num_heads=keys["model.num_heads"],
    mlp_dim=keys["model.mlp_dim"],
    max_len=keys["model.max_len"],
  )
  return planner.Rung(name, model, keys["data.seq_len"])


def rungs() -> list[planner.Rung]:
  return [rung(name) for name in RUNGS]


def overrides(
  name: str,
  tokens_per_param: float | None = None,
  budget: float | None = None,
  tokens: int | None = None,
  **batch_limits,
) -> dict[str, int | float | str]:
  """Shape and schedule of rung `name`, as dotted keys for a sweep, trained on `tokens_per_param`
  x N tokens (default 20), on `budget` FLOPs' worth, or on `tokens`. `batch_limits` (max_rows,
  min_rows, min_steps; CPU rungs: CPU_BATCH_LIMITS) go to `planner.plan_tokens`."""
  if shape(name)["model.embed_dim"] <= CPU_MAX_WIDTH:
    batch_limits = {**CPU_BATCH_LIMITS, **batch_limits}
  if budget is not None:
    plan = planner.plan_budget(rung(name), budget, **batch_limits)
  elif tokens is not None:
    plan = planner.plan_tokens(rung(name), tokens, **batch_limits)
  else:
    plan = planner.plan_ratio(
      rung(name), tokens_per_param or planner.CHINCHILLA_TOKENS_PER_PARAM, **batch_limits
    )
  evals = max(plan.steps // 4, 1)  # Four evaluations per run: points on the loss-vs-compute curve.
  return {
    **shape(name),
    **plan.overrides(),
    "train.eval_every": evals,
    "train.checkpoint_every": evals,
    "train.log_every": min(50, evals),
  }


# Evaluation split of the corpora a sweep can name, where it is not "validation".
SPLITS = {"lm1b": "test"}


def sweep_base(
  dataset: str = "pydoc_topics", async_checkpoints: bool = True
) -> ml_collections.ConfigDict:
  """The base config of a ladder sweep: no samples; `async_checkpoints=False` on a CPU, where
  points run back to back and a background write has nothing to overlap with."""
  c = base.get_config()
  c.data.name = dataset
  # TFDS's lm1b has only train and test splits (the 1B-word benchmark reports test).
  c.data.eval_split = SPLITS.get(dataset, c.data.eval_split)
  c.sample.num_samples = 0
  c.train.async_checkpoints = async_checkpoints
  return c


def get_config(arg: str = "793k") -> ml_collections.ConfigDict:
  """`arg`: a rung name, optionally `,tokens_per_param=R` (default 20)."""
  name, *options = arg.split(",")
  kwargs = dict(option.split("=", 1) for option in options)
  if set(kwargs) - {"tokens_per_param"}:
    raise ValueError(
      f"configs/ladder.py: unknown option(s) {sorted(kwargs)} in {arg!r}; "
      "the only one is tokens_per_param=R."
    )
  ratio = float(kwargs.get("tokens_per_param", 0)) or None
  c = sweep.apply(base.get_config(), overrides(name, ratio))
  c.sample.num_samples = 0
  return c


def table() -> str:
  """The Markdown table of the docstring, computed (python -c 'from configs import ladder; ...')."""
  from jtrans import flops

  lines = [
    "| rung | layers | d_model | heads | n_ctx | N non-embedding | total (vocab 259) | "
    "train FLOP/token |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rungs():
    m, counts = r.model, flops.param_counts(r.model)
    lines.append(
      f"| {r.name} | {m.num_layers} | {m.embed_dim} | {m.num_heads} | {r.seq_len} | "
      f"{counts.non_embedding:,} | {counts.total:,} | {r.flops_per_token:.3g} |"
    )
  return "\n".join(lines)
