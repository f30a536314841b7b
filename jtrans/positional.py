"""Position encodings as pure functions."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sinusoidal(positions: jax.Array, features: int, max_timescale: float = 10_000.0) -> jax.Array:
  """The sine/cosine encoding of Attention Is All You Need.

  Args:
    positions: integer positions `[batch, length]`.
    features: the model width (even).
  Returns:
    `[batch, length, features]` float32: sines in the first half, cosines in the second.
  """
  half = features // 2
  inv_freq = max_timescale ** (-jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
