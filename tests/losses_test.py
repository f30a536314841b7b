"""jtrans/losses.py against numpy references."""

import jax.numpy as jnp
import numpy as np

from jtrans import losses

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
TARGETS = rng.integers(0, 7, size=(2, 5))
WEIGHTS = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)


def log_softmax(x):
  x = x.astype(np.float64)
  return (
    x
    - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
    - x.max(-1, keepdims=True)
  )


def test_weighted_cross_entropy_sums():
  out = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS), jnp.asarray(WEIGHTS))
  nll = -np.take_along_axis(log_softmax(LOGITS), TARGETS[..., None], -1)[..., 0]
  np.testing.assert_allclose(out["nll"], (nll * WEIGHTS).sum(), rtol=1e-6)
  np.testing.assert_allclose(out["loss"], out["nll"], rtol=1e-7)
  assert out["denominator"] == 8
  correct = (LOGITS.argmax(-1) == TARGETS) * WEIGHTS
  assert out["accuracy"] == correct.sum()
  means = losses.normalize(out)
  np.testing.assert_allclose(means["nll"], (nll * WEIGHTS).sum() / 8, rtol=1e-6)


def test_label_smoothing_is_cross_entropy_to_the_smoothed_target_minus_its_entropy():
  s, vocab = 0.1, LOGITS.shape[-1]
  out = losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS), label_smoothing=s)
  target = np.full(LOGITS.shape, s / (vocab - 1))
  np.put_along_axis(target, TARGETS[..., None], 1 - s, -1)
  ce = -(target * log_softmax(LOGITS)).sum(-1)
  entropy = -(target * np.log(target)).sum(-1)
  np.testing.assert_allclose(out["loss"], (ce - entropy).sum(), rtol=1e-5)
  # Predicting the smoothed distribution exactly scores zero.
  perfect = losses.cross_entropy(
    jnp.log(jnp.asarray(target, jnp.float32)), jnp.asarray(TARGETS), label_smoothing=s
  )
  np.testing.assert_allclose(perfect["loss"], 0.0, atol=1e-4)


def test_z_loss_adds_squared_log_normaliser():
  out = losses.cross_entropy(
    jnp.asarray(LOGITS), jnp.asarray(TARGETS), jnp.asarray(WEIGHTS), z_loss=1e-2
  )
  log_z = np.log(np.exp(LOGITS.astype(np.float64)).sum(-1))
  np.testing.assert_allclose(out["z_loss"], (1e-2 * log_z**2 * WEIGHTS).sum(), rtol=1e-5)
  np.testing.assert_allclose(out["loss"], out["nll"] + out["z_loss"], rtol=1e-6)
