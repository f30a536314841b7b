"""muP and CompleteP (jtrans/parametrization.py): exact at the base shape, per-group init and
learning rates read from the parameters' logical names, 1/d attention against float64 numpy,
CompleteP's branch multipliers, and the transfer analysis. The coordinate check (flat under
muP, growing under standard parametrisation) runs as the README shows it, in
tests/readme_test.py."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, mup
from jtrans import masks, optim, parametrization
from jtrans.models import ModelConfig, build_model, layers

CFG = ModelConfig(
  vocab_size=50, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=16,
  parametrization="mup", base_embed_dim=32,
)  # fmt: skip
TOKENS = jax.random.randint(jax.random.key(1), (2, 16), 0, 50)


def init(cfg: ModelConfig, seed: int = 0):
  return build_model(cfg).init(jax.random.key(seed), TOKENS)["params"]


def apply(cfg: ModelConfig, params) -> np.ndarray:
  return np.asarray(build_model(cfg).apply({"params": nn.meta.unbox(params)}, TOKENS))


def paths(tree) -> dict[str, jax.Array]:
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(tree))[0]
  return {"/".join(p.key for p in path): leaf for path, leaf in flat}


def test_mup_at_its_base_width_is_standard_parametrisation():
  """Same init, same logits, same optimizer updates: muP only rescales away from the base."""
  standard = dataclasses.replace(CFG, parametrization="standard")
  params = init(CFG)
  for name, leaf in paths(init(standard)).items():
    np.testing.assert_array_equal(leaf, paths(params)[name], err_msg=name)
  np.testing.assert_array_equal(apply(CFG, params), apply(standard, params))
  boxed = jax.eval_shape(lambda: init(CFG))
  multipliers = parametrization.lr_multipliers(CFG, boxed)
  assert multipliers and set(multipliers.values()) == {1.0}


def test_learning_rate_multipliers_follow_the_logical_names():
  """At 4x the base width: 1/4 for attention and MLP kernels (hidden: both sides grow),
  1 for embeddings, biases, norms (and a scanned stack's `layers` axis changes nothing)."""
  wide = dataclasses.replace(CFG, embed_dim=128, mlp_dim=256)
  for scan in (False, True):
    cfg = dataclasses.replace(wide, scan_layers=scan)
    multipliers = parametrization.lr_multipliers(cfg, jax.eval_shape(lambda c=cfg: init(c)))
    names = {"/".join(k) for k in multipliers}
    every = set(paths(jax.eval_shape(lambda c=cfg: init(c))))
    hidden = {n for n in every if n.endswith("kernel")}
    assert names == hidden and len(hidden) == 6 * (1 if scan else cfg.num_layers)
    assert set(multipliers.values()) == {0.25}


def test_the_optimizer_scales_each_update_by_its_multiplier():
  """One AdamW step with the multipliers equals plain AdamW's step times 1/m on hidden kernels
  and unchanged elsewhere, on the same gradients."""
  wide = dataclasses.replace(CFG, embed_dim=128, mlp_dim=256)
  params = nn.meta.unbox(init(wide))
  grads = jax.tree.map(
    lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)), params
  )
  c = base.get_config().optim
  c.warmup_steps = 0
  multipliers = parametrization.lr_multipliers(wide, jax.eval_shape(lambda: init(wide)))
  plain = optim.make_optimizer(c, 10)
  scaled = optim.make_optimizer(c, 10, lr_multipliers=multipliers)
  step = lambda tx: jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])  # noqa: E731
  expected, got = step(plain)(grads, params), step(scaled)(grads, params)
  for name, update in paths(got).items():
    factor = 0.25 if name.endswith("kernel") else 1.0
    np.testing.assert_allclose(update, factor * paths(expected)[name], rtol=1e-6, err_msg=name)


def test_hidden_init_shrinks_with_width_and_embeddings_do_not():
  wide = dataclasses.replace(CFG, embed_dim=512, mlp_dim=2048)  # m = 16: std / 4.
  leaves = paths(init(wide))
  np.testing.assert_allclose(np.std(leaves["decoder/block_0/mlp/wi/kernel"]), 0.02 / 4, rtol=0.03)
  np.testing.assert_allclose(
    np.std(leaves["decoder/block_0/attention/query/kernel"]), 0.005, rtol=0.03
  )
  np.testing.assert_allclose(np.std(leaves["embed/token_embed/embedding"]), 0.02, rtol=0.03)
  residual = 0.02 / 4 / (2 * wide.num_layers) ** 0.5  # GPT-2's scaled init on top.
  np.testing.assert_allclose(np.std(leaves["decoder/block_0/mlp/wo/kernel"]), residual, rtol=0.03)


def test_mup_attention_is_one_over_head_dim_against_float64():
  """softmax(q.k sqrt(base_head_dim) / head_dim) v, computed in numpy float64."""
  cfg = dataclasses.replace(CFG, embed_dim=128, mlp_dim=256, num_heads=2, use_bias=False)
  module = layers.Attention(cfg, causal=True)
  x = jax.random.normal(jax.random.key(2), (1, 6, 128))
  mask = masks.MaskSpec(causal=True)
  params = nn.meta.unbox(module.init(jax.random.key(3), x, mask)["params"])
  params = jax.tree.map(lambda p: p * 20, params)  # Far from uniform attention.
  got = np.asarray(module.apply({"params": params}, x, mask))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  xs = np.asarray(x, np.float64)[0]
  q, k, v = (np.einsum("le,ehd->lhd", xs, p[n]["kernel"]) for n in ("query", "key", "value"))
  head_dim, base_head_dim = 64, 16
  logits = np.einsum("qhd,khd->hqk", q, k) * base_head_dim**0.5 / head_dim
  logits = np.where(np.tril(np.ones((6, 6), bool)), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("hqd,hde->qe", np.einsum("hqk,khd->hqd", weights, v), p["out"]["kernel"])
  np.testing.assert_allclose(got[0], expected, rtol=2e-4, atol=2e-5)


def test_completep_branches_carry_the_depth():
  """CompleteP at 4 layers from base 2 = muP with every residual branch's output projection
  halved; at its base depth it is muP itself; depth-muP's alpha 0.5 trains hidden matrices
  at lr x (L / L_base)^-1/2."""
  deep = dataclasses.replace(CFG, num_layers=4, parametrization="completep", base_num_layers=2)
  params = paths(init(deep))
  halved = {
    n: (0.5 * v if n.endswith(("attention/out/kernel", "out/bias", "wo/kernel", "wo/bias")) else v)
    for n, v in params.items()
  }
  as_mup = dataclasses.replace(deep, parametrization="mup")
  nest = lambda flat: jax.tree_util.tree_unflatten(  # noqa: E731
    jax.tree.structure(nn.meta.unbox(init(deep))), list(flat.values())
  )
  np.testing.assert_allclose(apply(deep, nest(params)), apply(as_mup, nest(halved)), atol=1e-5)
  at_base = dataclasses.replace(deep, base_num_layers=4)
  np.testing.assert_array_equal(apply(at_base, nest(params)), apply(as_mup, nest(params)))
  half = dataclasses.replace(deep, depth_alpha=0.5, embed_dim=64, mlp_dim=128)
  assert parametrization.hidden_lr_multiplier(half) == pytest.approx(0.5 * 2**-0.5)
  assert parametrization.branch_multiplier(half) == pytest.approx(2**-0.5)


def test_bad_parametrisation_settings_name_the_key():
  with pytest.raises(ValueError, match="config.model.parametrization"):
    dataclasses.replace(CFG, parametrization="ntk")
  with pytest.raises(ValueError, match="norm_position='pre'"):
    dataclasses.replace(CFG, parametrization="completep", norm_position="post")
  with pytest.raises(ValueError, match="decoder and encoder"):
    dataclasses.replace(CFG, family="vit", positions="learned")


def test_transfer_analysis_finds_each_sizes_optimum_and_its_drift(tmp_path):
  """A learning rate x width sweep's workdir (configs and final eval losses written here, with
  known optima: standard's halves per doubling of width, muP's stays): `--mode=analyze` reports
  each optimum and a drift of -3 grid steps for standard and 0 for muP; a diverged run is
  named, not chosen."""
  import json
  import math

  from jtrans import modes
  from jtrans.scaling import sweep

  base_config = mup.get_config("transfer")
  lrs = [2.0**-k for k in range(11, 4, -1)]
  for i, (name, width, lr) in enumerate(
    (n, w, lr) for n in ("standard", "mup") for w in (128, 256, 512, 1024) for lr in lrs
  ):
    optimum = 2.0**-6 * (128 / width if name == "standard" else 1.0)
    loss = 1.5 + 0.05 * math.log2(lr / optimum) ** 2 - 0.01 * math.log2(width)
    if name == "mup" and width == 1024 and lr == lrs[-1]:
      loss = float("nan")
    keys = {"model.parametrization": name, "model.embed_dim": width, "model.mlp_dim": 4 * width}
    config = sweep.apply(base_config, {**keys, "optim.lr": lr})
    run = tmp_path / f"{i:03d}-x"
    run.mkdir()
    (run / "config.json").write_text(config.to_json_best_effort())
    record = {"step": config.train.steps, "split": "eval", "nll": loss}
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
  text = modes.analyze(str(tmp_path), 0)
  assert (
    "| standard | 0.0156 (1.430) | 0.00781 (1.420) | 0.00391 (1.410) | 0.00195 (1.400) | -3.0 |"
    in text
  ), text
  assert (
    "| mup | 0.0156 (1.430) | 0.0156 (1.420) | 0.0156 (1.410) | 0.0156 (1.400) | +0.0 |" in text
  ), text
  assert "Diverged (loss not finite): 055-x" in text
  summary = json.loads((tmp_path / "transfer.json").read_text())
  assert summary["optima"]["mup"]["drift_grid_steps"] == 0.0
  assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"
