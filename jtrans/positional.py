"""Position encodings as pure functions: sinusoidal, rotary (RoPE), T5's relative buckets."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal(positions: jax.Array, features: int, max_timescale: float = 10_000.0) -> jax.Array:
  """The sine/cosine encoding of Attention Is All You Need.

  Frequencies are the paper's, `1 / max_timescale^(2i / features)`; the sines fill the first
  half and the cosines the second (the layout of Marian and fairseq, rather than interleaved).

  Args:
    positions: integer positions `[batch, length]`.
    features: the model width (even).
  Returns:
    `[batch, length, features]` float32.
  """
  half = features // 2
  inv_freq = max_timescale ** (-2.0 * jnp.arange(half, dtype=jnp.float32) / features)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def rotary(x: jax.Array, positions: jax.Array, theta: float = 10_000.0) -> jax.Array:
  """Rotary position embedding (Su et al.) in the "rotate half" layout of Llama and GPT-NeoX.

  Feature i of the first half and feature i of the second half form one pair, rotated by
  `position / theta^(2i / head_dim)`.

  Args:
    x: queries or keys `[batch, length, heads, head_dim]` (head_dim even).
    positions: integer positions `[batch, length]`.
  Returns:
    `x` rotated, same shape and dtype.
  """
  half = x.shape[-1] // 2
  inv_freq = theta ** (-2.0 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])
  angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [batch, length, 1, half]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def relative_position_bucket(
  relative_position: jax.Array,
  *,
  bidirectional: bool,
  num_buckets: int = 32,
  max_distance: int = 128,
) -> jax.Array:
  """T5's bucket of `key_position - query_position`: exact for small distances, then
  logarithmic up to `max_distance`, beyond which all distances share the last bucket.
  Causal (not bidirectional) attention only sees keys at or before the query, so the
  buckets are spent on non-positive offsets alone."""
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # The float division of a distance below max_exact gives log(<1) < 0; `where` discards it.
  large = max_exact + (
    jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    / math.log(max_distance / max_exact)
    * (num_buckets - max_exact)
  ).astype(relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


def relative_position_bias(
  table: jax.Array,
  q_positions: jax.Array,
  k_positions: jax.Array,
  *,
  bidirectional: bool,
  max_distance: int,
) -> jax.Array:
  """Additive attention logits from a learned `[num_buckets, heads]` table.

  Args:
    q_positions: `[batch, q_length]`; k_positions: `[batch, kv_length]`.
  Returns:
    `[batch, heads, q_length, kv_length]` float32.
  """
  relative = k_positions[:, None, :] - q_positions[:, :, None]
  buckets = relative_position_bucket(
    relative, bidirectional=bidirectional, num_buckets=table.shape[0], max_distance=max_distance
  )
  return jnp.moveaxis(table.astype(jnp.float32)[buckets], -1, 1)
