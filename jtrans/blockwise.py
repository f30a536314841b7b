"""Memory-efficient attention in plain JAX: an online softmax over key blocks (Rabe & Staats
2021; FlashAttention's recurrence) with a custom backward pass that recomputes each block, so
neither pass stores the `[q_length, kv_length]` matrix.

The forward pass walks query blocks; for each it keeps a running maximum, normaliser and
weighted sum over the key blocks it may see, and saves only the output and the log-sum-exp of
each query row. The backward pass walks key blocks, recomputes the probabilities of each query
block from that log-sum-exp and adds to dq, dk, dv (and d bias). Blocks that the causal or
window pattern masks entirely are skipped in both passes, so a causal pass does about half the
work of the dense one and a window's cost grows linearly with length.

Layout as `attention.py`: q `[batch, q_length, heads, head_dim]`, k and v `[batch, kv_length,
kv_heads, head_dim]` (grouped-query when kv_heads < heads). Lengths need not divide the block
sizes. A query row that may see no key gives zeros.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jtrans import masks

NEG_INF = -jnp.inf


class Blocks(NamedTuple):
  q: int = 256  # Query rows per block.
  kv: int = 256  # Key rows per block.


DEFAULT_BLOCKS = Blocks()


def _visits(layout: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """For each row of a boolean block layout, the columns it holds, left-aligned
  (`[rows, most]` int32), and how many (`[rows]`): the blocks a pass visits."""
  counts = layout.sum(1)
  index = np.zeros((layout.shape[0], max(int(counts.max(initial=0)), 1)), np.int32)
  for row in range(layout.shape[0]):
    held = np.flatnonzero(layout[row])
    index[row, : held.size] = held
  return jnp.asarray(index), jnp.asarray(counts, jnp.int32)


def _block_mask(i, j, q_seg, kv_seg, sizes, lengths, pattern):
  """Boolean `[batch, 1, 1, block_q, block_kv]` (batch may be 1) of query block i x key block j."""
  block_q, block_kv = sizes
  q_pos = i * block_q + jnp.arange(block_q)[:, None]
  k_pos = j * block_kv + jnp.arange(block_kv)[None, :]
  allowed = masks.allowed(pattern, q_pos, k_pos, lengths)[None]
  qs = jax.lax.dynamic_slice_in_dim(q_seg, i * block_q, block_q, 1) if q_seg is not None else None
  ks = (
    jax.lax.dynamic_slice_in_dim(kv_seg, j * block_kv, block_kv, 1) if kv_seg is not None else None
  )
  if qs is not None and ks is not None:
    allowed = allowed & (qs[:, :, None] == ks[:, None, :]) & (qs[:, :, None] != 0)
  elif ks is not None:
    allowed = allowed & (ks[:, None, :] != 0)
  elif qs is not None:
    allowed = allowed & (qs[:, :, None] != 0)
  return allowed[:, None, None]  # [batch, kv_heads, groups, block_q, block_kv] broadcastable.


def _scores(qb, kb, bias_block, scale):
  """float32 logits `[batch, kv_heads, groups, block_q, block_kv]`."""
  s = jnp.einsum("bqhgd,bkhd->bhgqk", qb, kb, preferred_element_type=jnp.float32) * scale
  if bias_block is not None:
    s = s + bias_block.astype(jnp.float32)
  return s


def _bias_block(bias, i, j, sizes, heads_shape):
  """Bias block `[batch|1, kv_heads, groups, block_q, block_kv]` of the padded bias."""
  if bias is None:
    return None
  block_q, block_kv = sizes
  b = jax.lax.dynamic_slice_in_dim(bias, i * block_q, block_q, 2)
  b = jax.lax.dynamic_slice_in_dim(b, j * block_kv, block_kv, 3)
  return b.reshape(b.shape[0], *heads_shape, block_q, block_kv)


def _pad_to(x, axis, multiple):
  pad = -(-x.shape[axis] // multiple) * multiple - x.shape[axis]
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def _forward(q, k, v, bias, q_seg, kv_seg, pattern, blocks, lengths):
  """Padded inputs -> (out `[batch, q, kv_heads, groups, d]`, lse `[batch, kv_heads, groups, q]`)."""
  batch, q_len, kv_heads, groups, d = q.shape
  sizes = (blocks.q, blocks.kv)
  q_blocks = q_len // blocks.q
  scale = d**-0.5
  kv_index, kv_count = _visits(masks.block_layout(pattern, lengths, blocks.q, blocks.kv))

  def one_query_block(i):
    qb = jax.lax.dynamic_slice_in_dim(q, i * blocks.q, blocks.q, 1)

    def step(n, carry):
      m, l, acc = carry
      j = kv_index[i, n]
      kb = jax.lax.dynamic_slice_in_dim(k, j * blocks.kv, blocks.kv, 1)
      vb = jax.lax.dynamic_slice_in_dim(v, j * blocks.kv, blocks.kv, 1)
      s = _scores(qb, kb, _bias_block(bias, i, j, sizes, (kv_heads, groups)), scale)
      s = jnp.where(_block_mask(i, j, q_seg, kv_seg, sizes, lengths, pattern), s, NEG_INF)
      m_new = jnp.maximum(m, s.max(-1))
      safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new)  # No key yet: keep exp() finite.
      p = jnp.exp(s - safe[..., None])
      alpha = jnp.exp(jnp.where(jnp.isneginf(m), NEG_INF, m - safe))
      l = alpha * l + p.sum(-1)
      pv = jnp.einsum(
        "bhgqk,bkhd->bhgqd", p.astype(v.dtype), vb, preferred_element_type=jnp.float32
      )
      return m_new, l, alpha[..., None] * acc + pv

    shape = (batch, kv_heads, groups, blocks.q)
    init = (
      jnp.full(shape, NEG_INF, jnp.float32),
      jnp.zeros(shape, jnp.float32),
      jnp.zeros((*shape, d), jnp.float32),
    )
    m, l, acc = jax.lax.fori_loop(0, kv_count[i], step, init)
    out = jnp.where(l[..., None] > 0, acc / jnp.where(l > 0, l, 1.0)[..., None], 0.0)
    lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), NEG_INF)
    return out, lse

  out, lse = jax.lax.map(one_query_block, jnp.arange(q_blocks))
  # [q_blocks, b, h, g, block_q, ...] -> [b, q, h, g, d] and [b, h, g, q].
  out = jnp.moveaxis(out, 0, 3).reshape(batch, kv_heads, groups, q_len, d)
  lse = jnp.moveaxis(lse, 0, 3).reshape(batch, kv_heads, groups, q_len)
  return jnp.transpose(out, (0, 3, 1, 2, 4)).astype(q.dtype), lse


def _backward(q, k, v, bias, q_seg, kv_seg, out, lse, dout, pattern, blocks, lengths):
  """Gradients of the padded inputs (dq, dk, dv, dbias), recomputing each block."""
  batch, q_len, kv_heads, groups, d = q.shape
  kv_len = k.shape[1]
  sizes = (blocks.q, blocks.kv)
  kv_blocks = kv_len // blocks.kv
  scale = d**-0.5
  layout = masks.block_layout(pattern, lengths, blocks.q, blocks.kv)
  q_index, q_count = _visits(layout.T)
  # D_i = sum_d dO_i O_i, per query row: [b, h, g, q].
  delta = jnp.einsum("bqhgd,bqhgd->bhgq", dout.astype(jnp.float32), out.astype(jnp.float32))

  def one_key_block(j, carry):
    dq, dbias = carry
    kb = jax.lax.dynamic_slice_in_dim(k, j * blocks.kv, blocks.kv, 1)
    vb = jax.lax.dynamic_slice_in_dim(v, j * blocks.kv, blocks.kv, 1)

    def step(n, inner):
      dk, dv, dq, dbias = inner
      i = q_index[j, n]
      qb = jax.lax.dynamic_slice_in_dim(q, i * blocks.q, blocks.q, 1)
      dob = jax.lax.dynamic_slice_in_dim(dout, i * blocks.q, blocks.q, 1)
      lse_b = jax.lax.dynamic_slice_in_dim(lse, i * blocks.q, blocks.q, 3)
      delta_b = jax.lax.dynamic_slice_in_dim(delta, i * blocks.q, blocks.q, 3)
      s = _scores(qb, kb, _bias_block(bias, i, j, sizes, (kv_heads, groups)), scale)
      allowed = _block_mask(i, j, q_seg, kv_seg, sizes, lengths, pattern)
      allowed = allowed & ~jnp.isneginf(lse_b)[..., None]
      p = jnp.where(allowed, jnp.exp(s - jnp.where(allowed, lse_b[..., None], 0.0)), 0.0)
      dv = dv + jnp.einsum(
        "bhgqk,bqhgd->bkhd", p.astype(dob.dtype), dob, preferred_element_type=jnp.float32
      )
      dp = jnp.einsum("bqhgd,bkhd->bhgqk", dob, vb, preferred_element_type=jnp.float32)
      ds = p * (dp - delta_b[..., None])  # d logits (with scale and bias folded in).
      dq_b = jnp.einsum(
        "bhgqk,bkhd->bqhgd", ds.astype(kb.dtype), kb, preferred_element_type=jnp.float32
      )
      dq = jax.lax.dynamic_update_slice_in_dim(
        dq,
        jax.lax.dynamic_slice_in_dim(dq, i * blocks.q, blocks.q, 1) + dq_b * scale,
        i * blocks.q,
        1,
      )
      dk = (
        dk
        + jnp.einsum(
          "bhgqk,bqhgd->bkhd", ds.astype(qb.dtype), qb, preferred_element_type=jnp.float32
        )
        * scale
      )
      if dbias is not None:
        reduced = ds.reshape(ds.shape[0], kv_heads * groups, blocks.q, blocks.kv)
        if dbias.shape[0] == 1:
          reduced = reduced.sum(0, keepdims=True)
        old = jax.lax.dynamic_slice(dbias, (0, 0, i * blocks.q, j * blocks.kv), reduced.shape)
        dbias = jax.lax.dynamic_update_slice(
          dbias, old + reduced, (0, 0, i * blocks.q, j * blocks.kv)
        )
      return dk, dv, dq, dbias

    zeros = jnp.zeros((batch, blocks.kv, kv_heads, d), jnp.float32)
    dk, dv, dq, dbias = jax.lax.fori_loop(0, q_count[j], step, (zeros, zeros, dq, dbias))
    return (dq, dbias), (dk, dv)

  dq0 = jnp.zeros(q.shape, jnp.float32)
  dbias0 = None if bias is None else jnp.zeros(bias.shape, jnp.float32)
  (dq, dbias), (dk, dv) = jax.lax.scan(
    lambda carry, j: one_key_block(j, carry), (dq0, dbias0), jnp.arange(kv_blocks)
  )
  dk = jnp.moveaxis(dk, 0, 1).reshape(batch, kv_len, kv_heads, d)
  dv = jnp.moveaxis(dv, 0, 1).reshape(batch, kv_len, kv_heads, d)
  return dq, dk, dv, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _attention(q, k, v, bias, segments, pattern, blocks, lengths):
  out, _ = _forward(q, k, v, bias, *segments, pattern, blocks, lengths)
  return out


def _attention_fwd(q, k, v, bias, segments, pattern, blocks, lengths):
  out, lse = _forward(q, k, v, bias, *segments, pattern, blocks, lengths)
  return out, (q, k, v, bias, segments, out, lse)


def _attention_bwd(pattern, blocks, lengths, residuals, dout):
  q, k, v, bias, segments, out, lse = residuals
  dq, dk, dv, dbias = _backward(q, k, v, bias, *segments, out, lse, dout, pattern, blocks, lengths)
  dsegments = jax.tree.map(
    lambda s: None if s is None else jnp.zeros(s.shape, jax.dtypes.float0), segments
  )
  return (
    dq.astype(q.dtype),
    dk.astype(k.dtype),
    dv.astype(v.dtype),
    None if bias is None else dbias.astype(bias.dtype),
    dsegments,
  )


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  bias: jax.Array | None = None,
  q_segments: jax.Array | None = None,
  kv_segments: jax.Array | None = None,
  pattern: masks.Pattern = masks.ALL_KEYS,
  blocks: Blocks = DEFAULT_BLOCKS,
) -> jax.Array:
  """softmax(q k^T / sqrt(head_dim) + bias, masked) v, block by block (module docstring).

  Args:
    query: `[batch, q_length, heads, head_dim]`; key, value `[batch, kv_length, kv_heads,
      head_dim]`.
    bias: additive logits bias `[batch | 1, heads, q_length, kv_length]` (T5's relative
      positions), or None.
    q_segments, kv_segments: int `[batch, length]` packed-document ids, 0 = padding. With both,
      a query sees keys of its own non-zero segment; with one, only the padding is masked.
    pattern: causality, a (left, right) window, global tokens and a BigBird layout, over
      positions 0..length-1 (`masks.Pattern`); blocks it masks whole are skipped.
    blocks: block sizes (clipped to the lengths); a BigBird pattern uses its own block size.
  Returns:
    `[batch, q_length, heads, head_dim]` in the query's dtype; zeros for rows that see no key.
  """
  batch, q_len, heads, d = query.shape
  kv_len, kv_heads = key.shape[1], key.shape[2]
  groups = heads // kv_heads
  if pattern.sparse is not None:  # BigBird's own blocks: each query block visits only its few.
    blocks = Blocks(pattern.sparse.block, pattern.sparse.block)
  blocks = Blocks(min(blocks.q, q_len), min(blocks.kv, kv_len))
  q = _pad_to(query.reshape(batch, q_len, kv_heads, groups, d), 1, blocks.q)
  k, v = _pad_to(key, 1, blocks.kv), _pad_to(value, 1, blocks.kv)
  if bias is not None:
    bias = jnp.broadcast_to(bias, (bias.shape[0], heads, q_len, kv_len))
    bias = _pad_to(_pad_to(bias, 2, blocks.q), 3, blocks.kv)
  segments = (
    None if q_segments is None else _pad_to(jnp.asarray(q_segments), 1, blocks.q),
    None if kv_segments is None else _pad_to(jnp.asarray(kv_segments), 1, blocks.kv),
  )
  out = _attention(q, k, v, bias, segments, pattern, blocks, (q_len, kv_len))
  return out[:, :q_len].reshape(batch, q_len, heads, d)
