"""Scaled dot-product attention and its masks, as pure functions.

Layout everywhere: queries `[batch, q_length, heads, head_dim]`, keys and values
`[batch, kv_length, kv_heads, head_dim]` with `heads % kv_heads == 0` (grouped-query
attention when `kv_heads < heads`). Masks are boolean, True where a query may attend,
shaped to broadcast against `[batch, heads, q_length, kv_length]`.
"""

from __future__ import annotations

from typing import Literal

import flax
import jax
import jax.numpy as jnp

from jtrans import blockwise

Implementation = Literal["xla", "jax", "cudnn", "blockwise"]
IMPLEMENTATIONS = ("xla", "jax", "cudnn", "blockwise")


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


def window_mask(q_length: int, kv_length: int, left: int, right: int) -> jax.Array:
  """`[1, 1, q_length, kv_length]`: query i sees keys i - left .. i + right (Longformer's local
  attention; a causal model's window is (left, 0))."""
  q_pos = jnp.arange(q_length)[:, None]
  k_pos = jnp.arange(kv_length)[None, :]
  return ((k_pos >= q_pos - left) & (k_pos <= q_pos + right))[None, None]


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
  if implementation not in IMPLEMENTATIONS or implementation == "blockwise":
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


@flax.struct.dataclass
class MaskSpec:
  """Which keys each query may see, described rather than materialised: the blockwise path
  reads it block by block (and skips blocks it masks whole); `dense` builds the boolean mask
  the other paths take.

  Segment ids are int `[batch, length]` packed-document ids, 0 = padding: with both, a query
  sees keys of its own non-zero segment; with kv_segments alone only padded keys are masked
  (cross-attention); with q_segments alone padded queries see nothing.
  """

  q_segments: jax.Array | None = None
  kv_segments: jax.Array | None = None
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  window: tuple[int, int] | None = flax.struct.field(pytree_node=False, default=None)

  def dense(self, q_length: int, kv_length: int) -> jax.Array | None:
    """The boolean mask, broadcastable to `[batch, heads, q_length, kv_length]` (None: all)."""
    q, kv = self.q_segments, self.kv_segments
    if q is not None and kv is not None:
      segments = segment_mask(q, kv)
    elif kv is not None:
      segments = (kv != 0)[:, None, None, :]
    elif q is not None:
      segments = (q != 0)[:, None, :, None]
    else:
      segments = None
    return combine_masks(
      causal_mask(q_length, kv_length) if self.causal else None,
      window_mask(q_length, kv_length, *self.window) if self.window is not None else None,
      segments,
    )


def attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  mask: MaskSpec | None = None,
  bias: jax.Array | None = None,
  *,
  implementation: Implementation = "xla",
  blocks: blockwise.Blocks = blockwise.DEFAULT_BLOCKS,
) -> jax.Array:
  """The one entry point: `dot_product_attention` of a described mask, by `implementation`.

  "blockwise" (`blockwise.py`) never materialises `[q_length, kv_length]` and skips the blocks
  that causality or the window mask whole; the others take `mask.dense(...)`. Shapes as
  `dot_product_attention`; rows that see no key are zeros on the blockwise path (they are
  padding) and an average of the values on the dense ones.
  """
  if implementation == "blockwise":
    mask = MaskSpec() if mask is None else mask
    pattern = blockwise.Pattern(mask.causal, mask.window)
    return blockwise.blockwise_attention(
      query,
      key,
      value,
      bias=bias,
      q_segments=mask.q_segments,
      kv_segments=mask.kv_segments,
      pattern=pattern,
      blocks=blocks,
    )
  dense = None if mask is None else mask.dense(query.shape[1], key.shape[1])
  return dot_product_attention(query, key, value, dense, bias, implementation=implementation)
