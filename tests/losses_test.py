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


def test_tiny_losses_and_their_gradients_stay_exact_in_float32():
  """A confident right answer (margins 18 to 40 nats, as in grokking's memorised training set)
  has a loss of 1e-8..1e-17: float64's value and gradient, not 0 for the loss and the target's
  logit (softmax collapse), so the gradient still sums to zero over the vocabulary."""
  import jax

  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 3, 16)).astype(np.float32)
  targets = rng.integers(0, 16, size=(4, 3))
  margins = np.array([18.0, 25.0, 40.0, 0.0])  # Row 3: an ordinary loss, target not the max.
  np.put_along_axis(
    logits, targets[..., None], margins[:, None, None] + 3.0 * (margins[:, None, None] > 0), -1
  )
  z = logits.astype(np.float64)
  log_z = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
  z_target = np.take_along_axis(z, targets[..., None], -1)
  others = np.where(np.eye(16)[targets] > 0, 0.0, np.exp(z - z_target)).sum(-1)
  # float64 too rounds log Z - z_target to 0 below 1e-16 (the 40-nat margin): log1p there.
  nll = np.where(others < 1, np.log1p(others), log_z - z_target[..., 0])
  p = np.exp(z - log_z[..., None])
  grad = np.where(
    np.eye(16)[targets] > 0, (-others / (1 + others))[..., None], p
  )  # p - 1 = -(1 - p).
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets))
  np.testing.assert_allclose(float(got["nll"]), nll.sum(), rtol=1e-6)
  loss_of = lambda x, t: losses.cross_entropy(x, t)["nll"]
  for row in range(3):  # Each confident row alone: its sum is its own tiny loss.
    one = loss_of(jnp.asarray(logits[row : row + 1]), jnp.asarray(targets[row : row + 1]))
    np.testing.assert_allclose(float(one), nll[row].sum(), rtol=1e-4)
    assert 0 < nll[row].max() < 1e-7  # Where log Z - z_target rounds to 0 in float32.
  g = np.asarray(jax.grad(loss_of)(jnp.asarray(logits), jnp.asarray(targets)), np.float64)
  np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-30)  # XLA's float32 exp.
  np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-7)
  assert (np.take_along_axis(g, targets[..., None], -1)[:3] < 0).all()  # Not collapsed to 0.


def test_mixup_cross_entropy_is_the_ratio_weighted_sum_of_both_labels_losses():
  """Mixup's loss against float64 numpy: r CE(y) + (1 - r) CE(y rolled) per image (with label
  smoothing on both), weighted; accuracy counts the first label, which r >= 1/2 favours."""
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 2
  targets = rng.integers(0, 5, 6)
  mixed = np.roll(targets, 1)
  ratio = np.full(6, 0.7, np.float32)
  weights = np.array([1, 1, 1, 1, 1, 0], np.float32)
  out = losses.mixup_cross_entropy(
    jnp.asarray(logits),
    jnp.asarray(targets),
    jnp.asarray(mixed),
    jnp.asarray(ratio),
    jnp.asarray(weights),
    label_smoothing=0.1,
  )
  log_p = log_softmax(logits)
  smooth = lambda y: np.where(np.arange(5) == y[:, None], 0.9, 0.1 / 4)  # noqa: E731
  entropy = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1 / 4))
  ce = lambda y: -(smooth(y) * log_p).sum(-1) - entropy  # noqa: E731
  nll = lambda y: -np.take_along_axis(log_p, y[:, None], -1)[:, 0]  # noqa: E731
  want = (0.7 * ce(targets) + 0.3 * ce(mixed)) * weights
  np.testing.assert_allclose(out["loss"], want.sum(), rtol=1e-5)
  np.testing.assert_allclose(
    out["nll"], ((0.7 * nll(targets) + 0.3 * nll(mixed)) * weights).sum(), rtol=1e-5
  )
  assert out["denominator"] == 5
  assert out["accuracy"] == ((logits.argmax(-1) == targets) * weights).sum()
