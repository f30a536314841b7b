"""Schedules, clipping and the weight-decay mask of jtrans/optim.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from jtrans import optim


def optim_config(**changes):
  c = base.get_config().optim
  c.lr, c.warmup_steps, c.final_lr_ratio = 1.0, 10, 0.1
  for k, v in changes.items():
    c[k] = v
  return c


@pytest.mark.parametrize(
  "schedule, expected",
  [
    ("cosine", {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.1 + 0.9 * 0.5, 110: 0.1}),
    ("linear", {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.55, 110: 0.1}),
    ("constant", {5: 0.5, 10: 1.0, 110: 1.0}),
    ("rsqrt", {5: 0.5, 10: 1.0, 30: math.sqrt(10 / 30), 110: math.sqrt(10 / 110)}),
  ],
)
def test_schedule_values_at_known_steps(schedule, expected):
  fn = optim.make_schedule(optim_config(schedule=schedule), total_steps=110)
  for step, value in expected.items():
    np.testing.assert_allclose(float(fn(step)), value, rtol=1e-5, atol=1e-7, err_msg=f"step {step}")


def test_rsqrt_is_attention_is_all_you_need_schedule():
  d_model, warmup = 512, 4000
  c = optim_config(schedule="rsqrt", warmup_steps=warmup, lr=d_model**-0.5 * warmup**-0.5)
  fn = optim.make_schedule(c, total_steps=100_000)
  for step in (100, 4000, 20_000):
    paper = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    np.testing.assert_allclose(float(fn(step)), paper, rtol=1e-5)


def test_unknown_schedule_names_the_setting():
  with pytest.raises(ValueError, match="config.optim.schedule"):
    optim.make_schedule(optim_config(schedule="step"), 10)


PARAMS = {
  "token_embed": {"embedding": jnp.ones((4, 3))},
  "block_0": {
    "mlp": {"wi": {"kernel": jnp.ones((3, 5)), "bias": jnp.ones(5)}},
    "attention_norm": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
  },
}


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_weight_decay_mask(decay_embeddings):
  mask = optim.weight_decay_mask(PARAMS, decay_embeddings)
  assert mask["block_0"]["mlp"]["wi"] == {"kernel": True, "bias": False}
  assert mask["block_0"]["attention_norm"] == {"scale": False, "bias": False}
  assert mask["token_embed"]["embedding"] is decay_embeddings


def test_only_masked_leaves_decay():
  c = optim_config(schedule="constant", warmup_steps=0, lr=0.1, weight_decay=0.5, grad_clip=0.0)
  tx = optim.make_optimizer(c, 10)
  zero_grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zero_grads, tx.init(PARAMS), PARAMS)
  new = optax.apply_updates(PARAMS, updates)
  np.testing.assert_allclose(new["block_0"]["mlp"]["wi"]["kernel"], 1 - 0.1 * 0.5)
  np.testing.assert_array_equal(new["block_0"]["mlp"]["wi"]["bias"], 1.0)
  np.testing.assert_array_equal(new["block_0"]["attention_norm"]["scale"], 1.0)
  np.testing.assert_array_equal(new["token_embed"]["embedding"], 1.0)


def test_global_norm_clipping_scales_gradients_before_adam():
  c = optim_config(schedule="constant", warmup_steps=0, grad_clip=1.0, b1=0.9)
  tx = optim.make_optimizer(c, 10)
  grads = jax.tree.map(lambda p: 10.0 * jnp.ones_like(p), PARAMS)
  norm = float(optax.global_norm(grads))
  _, state = tx.update(grads, tx.init(PARAMS), PARAMS)
  mu = optax.tree_utils.tree_get(state, "mu")
  # Adam's first moment after one step is (1 - b1) x the clipped gradient (norm 1).
  np.testing.assert_allclose(float(optax.global_norm(mu)), 0.1 * 1.0, rtol=1e-5)
  assert norm > 1.0
  unclipped = optim.make_optimizer(optim_config(schedule="constant", grad_clip=0.0), 10)
  _, state = unclipped.update(grads, unclipped.init(PARAMS), PARAMS)
  np.testing.assert_allclose(
    float(optax.global_norm(optax.tree_utils.tree_get(state, "mu"))), 0.1 * norm, rtol=1e-5
  )
