"""Parameter and FLOP counts: published GPT-2 sizes, the real parameter tree, XLA's own count."""

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from configs import ladder
from jtrans import flops
from jtrans.models import ModelConfig, build_model
from jtrans.scaling import planner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ModelConfig(
  vocab_size=259, num_layers=2, num_heads=4, embed_dim=128, mlp_dim=512, max_len=64
)


def gpt2_config(size):
  spec = importlib.util.spec_from_file_location("gpt2", os.path.join(ROOT, "configs", "gpt2.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return ModelConfig.from_config(module.get_config(size).model)


@pytest.mark.parametrize(
  "size, published", [("small", 124e6), ("medium", 355e6), ("large", 774e6), ("xl", 1558e6)]
)
def test_gpt2_parameter_counts_match_the_paper_and_the_real_tree(size, published):
  cfg = gpt2_config(size)
  counts = flops.param_counts(cfg)
  assert counts.total == pytest.approx(published, rel=0.005)
  assert flops.tree_param_counts(cfg) == counts  # Traced with eval_shape: no memory.


@pytest.mark.parametrize(
  "options",
  [
    {},
    {"tie_embeddings": False},
    {"positions": "sinusoidal"},
    {"norm": "rmsnorm"},
    {"use_bias": False},
    {"num_kv_heads": 2},
    {"use_bias": False, "norm": "rmsnorm", "tie_embeddings": False, "num_kv_heads": 1},
  ],
)
def test_counts_follow_every_option(options):
  cfg = dataclasses.replace(SMALL, **options)
  counts = flops.param_counts(cfg)
  assert flops.tree_param_counts(cfg) == counts
  assert counts.embedding == (
    259 * 128 * (1 if cfg.tie_embeddings else 2) + (64 * 128 if cfg.positions == "learned" else 0)
  )


def test_ladder_counts_match_the_tree_and_the_docstring_table():
  """The tree of the rungs up to 21M (tracing is slower for deeper ones; the GPT-2 test covers
  48 layers), the formula for all."""
  for rung in ladder.rungs()[:9]:
    assert flops.tree_param_counts(rung.model) == flops.param_counts(rung.model), rung.name
  counts = [r.non_embedding_params for r in ladder.rungs()]
  assert 1e4 <= counts[0] <= 2e4 and 5e10 <= counts[-1] <= 2e11 and counts == sorted(counts)
  assert ladder.table() in ladder.__doc__, "regenerate the table: print(configs.ladder.table())"
  for rung in ladder.rungs():  # The name is the non-embedding count, rounded.
    scale = {"k": 1e3, "M": 1e6, "B": 1e9}[rung.name[-1]]
    assert float(rung.name[:-1]) * scale == pytest.approx(rung.non_embedding_params, rel=0.05)


def test_flops_per_token_formulas():
  cfg, ctx = SMALL, 64
  n = flops.param_counts(cfg).non_embedding
  d_attn, layers = cfg.num_heads * cfg.head_dim, cfg.num_layers
  assert flops.kaplan_flops_per_token(cfg, ctx) == 6 * n + 6 * layers * ctx * d_attn
  # The full score and value matmuls (PaLM's 12 L T d) and, causal, the unmasked half.
  full = flops.exact_train_flops_per_token(cfg, ctx)
  assert full == 6 * flops.matmul_params(cfg) + 12 * layers * ctx * d_attn
  causal = flops.exact_train_flops_per_token(cfg, ctx, causal=True)
  assert causal == flops.train_flops_per_token(cfg, ctx) + 6 * layers * d_attn
  parts = flops.matmul_flops_per_token(cfg, ctx)
  assert parts["mlp"] == 3 * 2 * 2 * 128 * 512 * layers and sum(parts.values()) == full


def test_exact_count_agrees_with_xlas_cost_analysis():
  """XLA counts every FLOP of the compiled gradient; matmuls are all but a few percent of it."""
  model = build_model(SMALL)
  tokens = jnp.zeros((4, 64), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens)["params"])

  def loss(p, t):
    return jnp.mean(jax.nn.logsumexp(model.apply({"params": p}, t), -1))

  analysis = jax.jit(jax.grad(loss)).lower(params, tokens).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  xla = analysis["flops"] / tokens.size
  exact = flops.exact_train_flops_per_token(SMALL, 64)
  assert exact <= xla <= 1.06 * exact, (xla, exact)


def test_mfu():
  assert flops.mfu(1000.0, 6e6, 1e11, 2) == pytest.approx(0.03)


def test_planner_spends_the_budget_on_the_rungs_that_bracket_20_tokens_per_parameter():
  plans = planner.plan(1e18, ladder.rungs(), tokens_per_param=20)
  assert 1 <= len(plans) <= 2
  ratios = sorted(p.tokens_per_param for p in plans)
  assert ratios[0] <= 20 * 1.1 and ratios[-1] >= 20 / 1.1
  for p in plans:
    assert p.flops == pytest.approx(1e18, rel=0.01)
    assert p.steps * p.batch_size * p.seq_len == p.tokens
    assert p.batch_size % 8 == 0 and p.steps >= planner.MIN_STEPS and 1e-4 < p.lr < 1e-2
  n_opt = planner.optimal_params(1e18)
  assert min(p.params for p in plans) <= 1.5 * n_opt and max(p.params for p in plans) >= n_opt / 1.5
  text = planner.format_budget(1e18, ladder.rungs(), 20)
  assert f"configs/ladder.py:{plans[0].rung}" in text and "--config.train.steps=" in text


def test_plan_batch_limits():
  rung = ladder.rung("13k")
  plan = planner.plan_ratio(rung, 2.0, max_rows=16, min_rows=4, min_steps=200)
  assert plan.batch_size == 4
  assert plan.tokens == pytest.approx(2 * rung.non_embedding_params, rel=0.02)
  assert planner.plan_ratio(ladder.rung("793k"), 20, max_rows=16).batch_size == 16


def test_a_frozen_base_costs_no_weight_gradients():
  """Differentiating only the learned position table (below every block, so the activations'
  gradients still run all the way down): XLA's count of the gradient is the exact count with
  trained_share 0, each weight's matmul at 2x forward, not 3x."""
  model = build_model(SMALL)
  tokens = jnp.zeros((4, 64), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens)["params"])

  def loss(position, p, t):
    p = {**p, "embed": {**p["embed"], "position_embed": position}}
    return jnp.mean(jax.nn.logsumexp(model.apply({"params": p}, t), -1))

  grad = jax.jit(jax.grad(loss))  # The frozen weights are arguments: nothing folds away.
  lowered = grad.lower(params["embed"]["position_embed"], params, tokens)
  analysis = lowered.compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  xla = analysis["flops"] / tokens.size
  exact = flops.exact_train_flops_per_token(SMALL, 64, trained_share=0.0)
  assert exact <= xla <= 1.06 * exact, (xla, exact)
  assert flops.train_flops_per_token(SMALL, 64, 0.0) == pytest.approx(
    4 * flops.matmul_params(SMALL) + 6 * SMALL.num_layers * 64 * SMALL.embed_dim
  )


def test_image_models_flops_agree_with_xlas_cost_analysis():
  """DiT and CLIP: the count per position (patch embedding, pixels out, per-image conditioning
  and projections spread over the image's positions; CLIP's text tower over its own) against
  XLA's count of the compiled gradient. Attention is bidirectional there: the full square,
  twice Kaplan's causal half."""
  dit = ModelConfig(
    family="dit", num_layers=2, embed_dim=64, num_heads=4, mlp_dim=256, image_size=16,
    patch_size=2, num_channels=3, num_classes=10,
  )  # fmt: skip
  clip = dataclasses.replace(
    dit, family="clip", embed_norm=True, projection_dim=32, text_embed_dim=48,
    text_num_heads=4, text_mlp_dim=96, text_num_layers=3, max_len=32,
  )  # fmt: skip
  image = jnp.zeros((4, 16, 16, 3))
  texts = jnp.zeros((4, 32), jnp.int32)
  for cfg, inputs, positions in (
    (dit, (image, jnp.zeros(4, jnp.int32), jnp.zeros(4, jnp.int32)), 64),
    (clip, (image, texts), 65 + 32),
  ):
    model = build_model(cfg)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs)["params"])  # noqa: B023

    def loss(p, *x):
      out = model.apply({"params": p}, *x)  # noqa: B023
      return sum(jnp.sum(o) for o in jax.tree.leaves(out))

    analysis = jax.jit(jax.grad(loss)).lower(params, *inputs).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    xla = analysis["flops"] / (4 * positions)
    ours = flops.train_flops_per_token(cfg, positions)
    # The other causal half of each tower's attention square.
    if cfg.family == "dit":
      ours += 6 * cfg.num_layers * positions * cfg.embed_dim
    else:
      tower = cfg.text_tower()
      ours += (65 * 6 * cfg.num_layers * 65 * cfg.embed_dim) / positions
      ours += (32 * 6 * tower.num_layers * 32 * tower.embed_dim) / positions
    print(f"{cfg.family}: ours {ours:.4g} FLOPs per position, XLA {xla:.4g}")
    assert ours <= xla <= 1.15 * ours, (cfg.family, xla, ours)
