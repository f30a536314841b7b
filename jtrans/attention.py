"""Scaled dot-product attention and its masks, as pure functions.

Layout everywhere: queries `[batch, q_length, heads, head_dim]`, keys and values
`[batch, kv_length, kv_heads, head_dim]` with `heads % kv_heads == 0` (grouped-query
attention when `kv_heads < heads`). Masks are boolean, True where a query may attend,
shaped to broadcast against `[batch, heads, q_length, kv_length]`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Implementation = Literal["xla", "jax", "cudnn"]
IMPLEMENTATIONS = ("xla", "jax", "cudnn")


def causal_mask(q_length: int, kv_length: int | None = None, offset: int = 0) -> jax.Array:
  """`[1, 1, q_length, kv_length]`: query i sees keys at positions <= i + offset."""
  kv_length = q_length if kv_length is None else kv_length
  q_pos = jnp.arange(q_length)[:, None] + offset
  k_pos = jnp.arange(kv_length)[None, :]
  return (k_pos <= q_pos)[None, None]


def padding_mask(q_valid: jax.Array, kv_valid: jax.Array | None = None) -> jax.Array:
  """`[batch, 1, q_length, kv_length]` from validity flags `[batch, length]` (True = real token)."""
  kv_valid = q_valid if kv_valid is None else kv_valid
  return q_valid.astype(bool)[:, None, :, None] & kv_valid.astype(bool)[:, None, None, :]


def segment_mask(q_segments: jax.Array, kv_segments: jax.Array | None = None) -> jax.Array:
  """`[batch, 1, q_length, kv_length]`: attend only within the same packed document.

  Segment ids are `[batch, length]` integers; 0 marks padding and never matches.
  """
  kv_segments = q_segments if kv_segments is None else kv_segments
  same = q_segments[:, None, :, None] == kv_segments[:, None, None, :]
  return same & (q_segments[:, None, :, None] != 0)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """Logical AND of the masks that are not None (None if all are)."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  combined = present[0]
  for m in present[1:]:
    combined = combined & m
  return combined


def dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  mask: jax.Array | None = None,
  bias: jax.Array | None = None,
  *,
  implementation: Implementation = "xla",
) -> jax.Array:
  """softmax(q k^T / sqrt(head_dim) + bias, masked) v, the softmax always in float32.

  Args:
    query: `[batch, q_length, heads, head_dim]`.
    key, value: `[batch, kv_length, kv_heads, head_dim]`.
    mask: boolean, broadcastable to `[batch, heads, q_length, kv_length]`.
    bias: additive logits bias broadcastable to the same shape (e.g. relative positions).
    implementation: "xla" is the plain einsum version below; "jax" calls
      `jax.nn.dot_product_attention` and lets it pick (cuDNN flash attention on GPUs
      where it applies); "cudnn" insists on cuDNN.
  Returns:
    `[batch, q_length, heads, head_dim]` in the query's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f"attention implementation {implementation!r} is unknown; set "
      f"config.model.attention_impl to one of {IMPLEMENTATIONS}."
    )
  if implementation != "xla":
    if mask is not None:
      mask = jnp.broadcast_to(mask, (query.shape[0], query.shape[2], query.shape[1], key.shape[1]))
    return jax.nn.dot_product_attention(
      query,
      key,
      value,
      bias=bias,
      mask=mask,
      implementation=None if implementation == "jax" else "cudnn",
    )

  batch, q_length, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  groups = heads // kv_heads
  # Grouped-query attention: each key/value head serves `groups` query heads.
  query = query.reshape(batch, q_length, kv_heads, groups, head_dim)
  logits = jnp.einsum("bqhgd,bkhd->bhgqk", query, key, preferred_element_type=jnp.float32)
  logits = logits * (head_dim**-0.5)
  logits = logits.reshape(batch, heads, q_length, key.shape[1])
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    # A large finite value, not -inf, so a fully masked (padding) row stays finite.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  weights = weights.reshape(batch, kv_heads, groups, q_length, key.shape[1])
  out = jnp.einsum("bhgqk,bkhd->bqhgd", weights, value)
  return out.reshape(batch, q_length, heads, head_dim).astype(query.dtype)
