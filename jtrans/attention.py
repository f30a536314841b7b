"""Scaled dot-product attention as pure functions, and `attention`, the one entry point the
models call with a described mask (`masks.py`) and an implementation.

Layout everywhere: queries `[batch, q_length, heads, head_dim]`, keys and values
`[batch, kv_length, kv_heads, head_dim]` with `heads % kv_heads == 0` (grouped-query
attention when `kv_heads < heads`). Dense masks are boolean, True where a query may attend,
shaped to broadcast against `[batch, heads, q_length, kv_length]`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jtrans import blockwise, kernels, masks

Implementation = Literal["xla", "jax", "cudnn", "blockwise", "splash", "auto"]
IMPLEMENTATIONS = ("xla", "jax", "cudnn", "blockwise", "splash", "auto")
DENSE = ("xla", "jax", "cudnn")  # What `dot_product_attention` runs (a materialised mask).


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
  if implementation not in DENSE:
    raise ValueError(
      f"attention implementation {implementation!r} is not one of {DENSE} (dense masks); "
      f"config.model.attention_impl takes {IMPLEMENTATIONS}, the others through "
      "attention.attention."
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


def attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  mask: masks.MaskSpec | None = None,
  bias: jax.Array | None = None,
  *,
  implementation: Implementation = "xla",
  blocks: blockwise.Blocks = blockwise.DEFAULT_BLOCKS,
) -> jax.Array:
  """The one entry point: attention over a described mask, by `implementation`.

  "blockwise" (`blockwise.py`) never materialises `[q_length, kv_length]` and skips the blocks
  that its pattern masks whole; "cudnn" and "splash" are the fused kernels of `kernels.py`,
  which fall back to "blockwise" (logging why, once) for what they cannot take; "auto" is the
  platform's kernel; "xla" and "jax" take `mask.dense(...)`. Shapes as
  `dot_product_attention`; rows that see no key are zeros on the blockwise path (they are
  padding) and an average of the values on the dense ones.
  """
  mask = masks.MaskSpec() if mask is None else mask
  implementation = kernels.resolve(implementation)
  if implementation in ("cudnn", "splash"):
    kernel = implementation
    if kernel == "cudnn":
      reason = kernels.cudnn_unsupported(query, key, mask, bias)
      if reason is None:
        return kernels.cudnn_attention(query, key, value, mask, bias)
    else:
      reason = kernels.splash_unsupported(query, key, mask, bias)
      if reason is None:
        return kernels.splash_attention(query, key, value, mask)
    kernels.log_fallback(kernel, reason)
    implementation = "blockwise"
  if implementation == "blockwise":
    return blockwise.blockwise_attention(
      query,
      key,
      value,
      bias=bias,
      q_segments=mask.q_segments,
      kv_segments=mask.kv_segments,
      pattern=mask.pattern,
      blocks=blocks,
    )
  dense = mask.dense(query.shape[1], key.shape[1])
  return dot_product_attention(query, key, value, dense, bias, implementation=implementation)
