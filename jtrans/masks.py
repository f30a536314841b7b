"""Which keys each query may see: attention masks as pure functions, and `MaskSpec`, a mask
described rather than materialised.

A dense mask is boolean, True where a query may attend, shaped to broadcast against
`[batch, heads, q_length, kv_length]`. A `MaskSpec` holds the per-example part (segment ids)
as arrays and the pattern (causality, a window, global tokens, BigBird's block-sparse layout)
as static settings: the blockwise path reads it block by block and skips the blocks it masks
whole (`block_layout`); the dense paths take `MaskSpec.dense`.

A pattern is `causal AND (window OR global OR sparse)`, the union over the parts that are
set (all keys when none is), ANDed with the segments: Longformer is a window with global
tokens, BigBird a `Sparse` layout (its own window, global and random blocks).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np


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


class Sparse(NamedTuple):
  """BigBird's block-sparse pattern (Zaheer et al. 2020) over blocks of `block` positions:
  each query block sees the `window` blocks either side of its own, the first
  `global_blocks` blocks (which see every block too) and `random` other blocks, drawn once
  per query block from `seed` (among the blocks causality allows)."""

  block: int = 64
  window: int = 1
  global_blocks: int = 1
  random: int = 2
  seed: int = 0


class Pattern(NamedTuple):
  """The static part of a mask (module docstring): hashable, so a compiled function can take
  it as a static argument."""

  causal: bool = False
  window: tuple[int, int] | None = None  # Query i sees keys i - left .. i + right.
  global_tokens: int = 0  # The first n positions see, and are seen by, every position.
  sparse: Sparse | None = None


ALL_KEYS = Pattern()


@functools.lru_cache(maxsize=64)
def sparse_layout(sparse: Sparse, q_length: int, kv_length: int, causal: bool) -> np.ndarray:
  """BigBird's boolean `[q_blocks, kv_blocks]` layout (blocks of `sparse.block` positions)."""
  q_blocks, kv_blocks = -(-q_length // sparse.block), -(-kv_length // sparse.block)
  i, j = np.arange(q_blocks)[:, None], np.arange(kv_blocks)[None, :]
  layout = (np.abs(i - j) <= sparse.window) | (i < sparse.global_blocks)
  layout = layout | (j < sparse.global_blocks)
  allowed = (j <= i) if causal else np.ones_like(layout)
  rng = np.random.default_rng(sparse.seed)
  for row in range(sparse.global_blocks, q_blocks):
    others = np.flatnonzero(~layout[row] & allowed[row])
    picked = rng.choice(others, min(sparse.random, others.size), replace=False)
    layout[row, picked] = True
  return layout & allowed


def allowed(
  pattern: Pattern, q_pos: jax.Array, k_pos: jax.Array, lengths: tuple[int, int]
) -> jax.Array:
  """Boolean mask of the pattern at integer positions `q_pos [..., 1]` x `k_pos [1, ...]`
  (broadcast), False past the lengths `(q_length, kv_length)`."""
  mask = (q_pos < lengths[0]) & (k_pos < lengths[1])
  if pattern.causal:
    mask &= k_pos <= q_pos
  parts = []
  if pattern.window is not None:
    left, right = pattern.window
    parts.append((k_pos >= q_pos - left) & (k_pos <= q_pos + right))
  if pattern.global_tokens:
    parts.append((q_pos < pattern.global_tokens) | (k_pos < pattern.global_tokens))
  if pattern.sparse is not None:
    layout = jnp.asarray(sparse_layout(pattern.sparse, *lengths, pattern.causal))
    size = pattern.sparse.block
    rows = jnp.clip(q_pos // size, 0, layout.shape[0] - 1)
    cols = jnp.clip(k_pos // size, 0, layout.shape[1] - 1)
    parts.append(layout[rows, cols])
  if parts:
    mask &= functools.reduce(jnp.logical_or, parts)
  return mask


def _block_any(allowed_: np.ndarray, first: np.ndarray, last: np.ndarray, axis: int) -> np.ndarray:
  """OR of `allowed_` over index ranges [first, last] along `axis`, one range per block."""
  return np.stack(
    [np.take(allowed_, np.arange(a, b + 1), axis).any(axis) for a, b in zip(first, last)], axis
  )


@functools.lru_cache(maxsize=64)
def block_layout(
  pattern: Pattern, lengths: tuple[int, int], block_q: int, block_kv: int
) -> np.ndarray:
  """Boolean `[q_blocks, kv_blocks]`: which (query block, key block) pairs hold any position
  the pattern allows; the blockwise passes skip the rest."""
  q_first = np.arange(0, lengths[0], block_q)
  q_last = np.minimum(q_first + block_q, lengths[0]) - 1
  k_first = np.arange(0, lengths[1], block_kv)
  k_last = np.minimum(k_first + block_kv, lengths[1]) - 1
  qf, ql, kf, kl = q_first[:, None], q_last[:, None], k_first[None, :], k_last[None, :]
  layout = kf <= ql if pattern.causal else np.ones((qf.size, kf.size), bool)
  parts = []
  if pattern.window is not None:
    left, right = pattern.window
    parts.append((kl >= qf - left) & (kf <= ql + right))
  if pattern.global_tokens:
    parts.append((qf < pattern.global_tokens) | (kf < pattern.global_tokens))
  if pattern.sparse is not None:
    sparse = sparse_layout(pattern.sparse, *lengths, pattern.causal)
    size = pattern.sparse.block
    rows = _block_any(sparse, q_first // size, q_last // size, 0)
    parts.append(_block_any(rows, k_first // size, k_last // size, 1))
  if parts:
    layout = layout & functools.reduce(np.logical_or, parts)
  return layout


@flax.struct.dataclass
class MaskSpec:
  """A mask described, not materialised (module docstring).

  Segment ids are int `[batch, length]` packed-document ids, 0 = padding: with both, a query
  sees keys of its own non-zero segment; with kv_segments alone only padded keys are masked
  (cross-attention); with q_segments alone padded queries see nothing.
  """

  q_segments: jax.Array | None = None
  kv_segments: jax.Array | None = None
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  window: tuple[int, int] | None = flax.struct.field(pytree_node=False, default=None)
  global_tokens: int = flax.struct.field(pytree_node=False, default=0)
  sparse: Sparse | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def pattern(self) -> Pattern:
    return Pattern(self.causal, self.window, self.global_tokens, self.sparse)

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
    pattern = None
    if self.pattern != ALL_KEYS:
      q_pos, k_pos = jnp.arange(q_length)[:, None], jnp.arange(kv_length)[None, :]
      pattern = allowed(self.pattern, q_pos, k_pos, (q_length, kv_length))[None, None]
    return combine_masks(pattern, segments)
