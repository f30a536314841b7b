"""Token losses as pure functions returning weighted sums plus a denominator.

Sums (not means) are right for padded and packed batches and for data-parallel
reduction: divide by the summed denominator once, after everything is added up.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

SUMS = ("loss", "nll", "z_loss", "accuracy", "denominator")


def cross_entropy(
  logits: jax.Array,
  targets: jax.Array,
  weights: jax.Array | None = None,
  *,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
) -> dict[str, jax.Array]:
  """Token cross-entropy with optional label smoothing and z-loss.

  Args:
    logits: `[batch, length, vocab]` (computed in float32 whatever the dtype).
    targets: int `[batch, length]`.
    weights: `[batch, length]`, 0 for padding; None weighs every token 1.
    label_smoothing: mass spread uniformly over the vocabulary (0.1 in Vaswani et al.).
    z_loss: coefficient of log(Z)^2, which keeps the softmax normaliser near 1 (PaLM).
  Returns:
    weighted sums over tokens: `loss` (the objective: smoothed CE + z-loss), `nll` (plain
    CE, nats per token), `z_loss`, `accuracy` (correct argmax), and `denominator` (sum of
    weights).
  """
  logits = logits.astype(jnp.float32)
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  weights = weights.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  nll = _nll(logits, log_z, targets)
  objective = nll
  if label_smoothing:
    # Cross-entropy against 1 - s on the target and s / (vocab - 1) elsewhere, minus that
    # distribution's own entropy, so that predicting it exactly scores 0.
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    smoothed = (confidence - low) * nll - low * jnp.sum(log_probs, axis=-1)
    entropy = -(confidence * jnp.log(confidence) + label_smoothing * jnp.log(low))
    objective = smoothed - entropy
  z_term = z_loss * jnp.square(log_z)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {
    "loss": jnp.sum((objective + z_term) * weights),
    "nll": jnp.sum(nll * weights),
    "z_loss": jnp.sum(z_term * weights),
    "accuracy": jnp.sum(correct * weights),
    "denominator": jnp.sum(weights),
  }


def mixup_cross_entropy(
  logits: jax.Array,
  targets: jax.Array,
  mixed_targets: jax.Array,
  mix: jax.Array,
  weights: jax.Array | None = None,
  **options: float,
) -> dict[str, jax.Array]:
  """Mixup's loss (Zhang et al. 2018): `mix` x CE(targets) + (1 - mix) x CE(mixed_targets),
  with `cross_entropy`'s `options`; `accuracy` counts `targets`, the label of weight `mix` >= 1/2.

  Args:
    logits: `[batch, classes]`; targets, mixed_targets: int `[batch]`; mix: `[batch]` in
      [1/2, 1]; weights: `[batch]`, 0 for padding (None: 1).
  """
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  mix = mix.astype(jnp.float32)
  first = cross_entropy(logits, targets, weights * mix, **options)
  second = cross_entropy(logits, mixed_targets, weights * (1 - mix), **options)
  sums = {k: first[k] + second[k] for k in SUMS}
  correct = jnp.argmax(logits, axis=-1) == targets
  sums["accuracy"] = jnp.sum(correct * weights.astype(jnp.float32))
  return sums


def _nll(logits: jax.Array, log_z: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target), `[batch, length]`, accurate in float32 down to the smallest losses.

  log Z - z_target cancels to exactly 0 once p(target) rounds to 1 (a loss under ~6e-8), and
  so does its gradient on the target's logit (p - 1), while the other logits keep theirs: the
  gradient stops summing to zero and training pushes every logit apart ("softmax collapse",
  Prieto et al. 2025; it makes a full-batch grokking run spike every ~1500 steps, see
  experiments/grokking). Where the target is the argmax, log1p(sum over the other tokens of
  exp(z_j - z_target)) keeps both the loss and its gradient, -(1 - p), exact.
  """
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)
  is_target = jnp.arange(logits.shape[-1]) == targets[..., None]
  # <= 0 wherever the branch is used; the clip keeps the other branch's exp finite.
  gaps = jnp.minimum(logits - target_logit, 0.0)
  others = jnp.sum(jnp.where(is_target, 0.0, jnp.exp(gaps)), axis=-1)
  target_is_max = target_logit[..., 0] >= jnp.max(logits, axis=-1)
  return jnp.where(target_is_max, jnp.log1p(others), log_z - target_logit[..., 0])


def chunked_cross_entropy(
  hidden: jax.Array,
  project: Callable[[jax.Array], jax.Array],
  targets: jax.Array,
  weights: jax.Array | None = None,
  *,
  chunk_length: int,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
) -> dict[str, jax.Array]:
  """`cross_entropy(project(hidden), ...)` computed `chunk_length` positions at a time, so the
  float32 logits `[batch, length, vocab]` never exist at once: a scan adds each chunk's sums,
  and `jax.checkpoint` makes the backward pass recompute a chunk's logits instead of keeping
  them. Same sums and gradients as the unchunked loss (up to float32 summation order).

  Args:
    hidden: final hidden states `[batch, length, embed]`.
    project: `[batch, chunk_length, embed]` -> logits `[batch, chunk_length, vocab]` (the
      model's output layer, closing over its parameters).
    targets, weights, label_smoothing, z_loss: as `cross_entropy`.
  """
  batch, length = targets.shape
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  chunks = -(-length // chunk_length)
  pad = chunks * chunk_length - length

  def split(x: jax.Array) -> jax.Array:  # [batch, length, ...] -> [chunks, batch, chunk, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))  # Padding weighs 0.
    return jnp.moveaxis(x.reshape(batch, chunks, chunk_length, *x.shape[2:]), 1, 0)

  @jax.checkpoint
  def chunk_sums(h: jax.Array, t: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    return cross_entropy(project(h), t, w, label_smoothing=label_smoothing, z_loss=z_loss)

  def add(total, chunk):
    return jax.tree.map(jnp.add, total, chunk_sums(*chunk)), None

  zeros = {k: jnp.zeros((), jnp.float32) for k in SUMS}
  total, _ = jax.lax.scan(add, zeros, (split(hidden), split(targets), split(weights)))
  return total


def normalize(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Divides every weighted sum by `denominator` (kept as `tokens`)."""
  denominator = jnp.maximum(sums["denominator"], 1e-9)
  means = {k: v / denominator for k, v in sums.items() if k != "denominator"}
  means["tokens"] = sums["denominator"]
  return means


CONTRASTIVE = ("softmax", "sigmoid")


def contrastive(
  image_embeds: jax.Array,
  text_embeds: jax.Array,
  log_scale: jax.Array,
  bias: jax.Array,
  weights: jax.Array | None = None,
  *,
  kind: str = "softmax",
) -> dict[str, jax.Array]:
  """The image-text loss of a batch of matching pairs (row i's image goes with row i's text;
  every other row's is a negative).

  Args:
    image_embeds, text_embeds: unit-norm `[batch, dim]`. Under jit over a mesh the rows may be
      sharded over the data axes: the `[batch, batch]` logits still pair every image with the
      whole global batch's texts (XLA gathers the other shards).
    log_scale, bias: scalars; logits = exp(log_scale) x image . text + bias, the scale capped
      at 100 (CLIP clips its temperature there).
    weights: `[batch]`, 1 for real pairs, 0 for padding (neither a positive nor a negative).
    kind: "softmax": CLIP's symmetric InfoNCE, the mean of image->text and text->image
      cross-entropies over the batch; "sigmoid": SigLIP's, -sum_j log sigmoid(z_ij logit_ij)
      per image (z = 1 on the pair, -1 elsewhere), averaged over images.
  Returns:
    sums over the batch's images: `loss` (= `nll`), `z_loss` (0), `accuracy` (the image's
    own text scores highest among the batch's), and `denominator` (sum of weights).
  """
  if kind not in CONTRASTIVE:
    raise ValueError(f"config.loss.contrastive={kind!r} is not one of {CONTRASTIVE}.")
  rows = image_embeds.shape[0]
  weights = jnp.ones((rows,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  scale = jnp.exp(jnp.minimum(log_scale.astype(jnp.float32), jnp.log(100.0)))
  logits = scale * jnp.einsum(
    "id,jd->ij", image_embeds.astype(jnp.float32), text_embeds.astype(jnp.float32)
  ) + bias.astype(jnp.float32)
  real = weights > 0
  pairs = real[:, None] & real[None, :]
  diagonal = jnp.eye(rows, dtype=bool)
  if kind == "softmax":
    masked = jnp.where(pairs, logits, -1e9)
    image_to_text = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits)
    text_to_image = jax.nn.logsumexp(masked, axis=0) - jnp.diagonal(logits)
    per_row = 0.5 * (image_to_text + text_to_image)
  else:
    signs = jnp.where(diagonal, 1.0, -1.0)
    per_row = -jnp.sum(jnp.where(pairs, jax.nn.log_sigmoid(signs * logits), 0.0), axis=1)
  best = jnp.argmax(jnp.where(pairs, logits, -jnp.inf), axis=1)
  correct = (best == jnp.arange(rows)).astype(jnp.float32)
  loss = jnp.sum(jnp.where(real, per_row, 0.0) * weights)
  return {
    "loss": loss,
    "nll": loss,
    "z_loss": jnp.zeros((), jnp.float32),
    "accuracy": jnp.sum(correct * weights),
    "denominator": jnp.sum(weights),
  }


def noise_mse(
  predicted: jax.Array, noise: jax.Array, weights: jax.Array | None = None
) -> dict[str, jax.Array]:
  """The diffusion loss (Ho et al.'s simple loss): the mean squared error of the predicted noise
  over each image's pixels, summed over images.

  Args:
    predicted, noise: `[batch, height, width, channels]`.
    weights: `[batch]`, 0 for padding (None: 1).
  Returns:
    sums over images: `loss` (= `nll`), `z_loss` (0) and `denominator` (sum of weights).
  """
  per_image = jnp.mean(
    jnp.square(predicted.astype(jnp.float32) - noise.astype(jnp.float32)),
    axis=tuple(range(1, noise.ndim)),
  )
  weights = jnp.ones(per_image.shape, jnp.float32) if weights is None else weights
  loss = jnp.sum(per_image * weights.astype(jnp.float32))
  return {
    "loss": loss,
    "nll": loss,
    "z_loss": jnp.zeros((), jnp.float32),
    "denominator": jnp.sum(weights.astype(jnp.float32)),
  }
