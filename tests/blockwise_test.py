"""jtrans/blockwise.py (through `attention.attention`) against float64 numpy: outputs and the
gradients of q, k, v and the bias, for every mask kind, with lengths that do not divide the
block sizes and grouped-query heads; and against the dense path given the same mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import attention, blockwise, masks

B, H, D = 2, 4, 8
BLOCKS = blockwise.Blocks(q=8, kv=16)


def reference(q, k, v, mask, bias, dout):
  """(out, dq, dk, dv, dbias) of softmax(q k^T / sqrt(d) + bias, masked) v in float64 numpy,
  for the cotangent `dout`; rows with no visible key give zeros."""
  q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
  groups = q.shape[2] // k.shape[2]
  kr, vr = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  scale = q.shape[-1] ** -0.5
  s = np.einsum("bqhd,bkhd->bhqk", q, kr) * scale
  if bias is not None:
    s = s + np.asarray(bias, np.float64)
  mask = np.broadcast_to(np.asarray(mask), s.shape)
  row_max = np.max(np.where(mask, s, -1e300), axis=-1, keepdims=True)
  e = np.exp(np.where(mask, s - row_max, -np.inf))
  total = e.sum(-1, keepdims=True)
  p = np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
  out = np.einsum("bhqk,bkhd->bqhd", p, vr)
  dv = np.einsum("bhqk,bqhd->bkhd", p, dout)
  dp = np.einsum("bqhd,bkhd->bhqk", dout, vr)
  ds = p * (dp - np.einsum("bqhd,bqhd->bhq", dout, out)[..., None])
  dq = np.einsum("bhqk,bkhd->bqhd", ds, kr) * scale
  dk = np.einsum("bhqk,bqhd->bkhd", ds, q) * scale
  fold = lambda x: x.reshape(x.shape[0], x.shape[1], k.shape[2], groups, x.shape[3]).sum(3)
  return out, dq, fold(dk), fold(dv), ds


def inputs(q_len, kv_len, kv_heads, seed):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, q_len, H, D)).astype(np.float32)
  k = rng.normal(size=(B, kv_len, kv_heads, D)).astype(np.float32)
  v = rng.normal(size=(B, kv_len, kv_heads, D)).astype(np.float32)
  return q, k, v


def segments(length, seed):
  """Packed documents of random lengths, then padding (0) at the end of row 0."""
  rng = np.random.default_rng(seed)
  ids = np.cumsum(rng.random((B, length)) < 0.15, axis=1) + 1
  ids[0, length - 5 :] = 0
  return ids.astype(np.int32)


def specs(length):
  seg = jnp.asarray(segments(length, 1))
  valid = jnp.asarray((segments(length, 1) != 0).astype(np.int32))
  return {
    "none": masks.MaskSpec(),
    "causal": masks.MaskSpec(causal=True),
    "padding": masks.MaskSpec(q_segments=valid, kv_segments=valid),
    "segments": masks.MaskSpec(q_segments=seg, kv_segments=seg),
    "causal_segments": masks.MaskSpec(q_segments=seg, kv_segments=seg, causal=True),
    "causal_window": masks.MaskSpec(causal=True, window=(11, 0)),
    "window": masks.MaskSpec(window=(5, 9)),
    "window_segments": masks.MaskSpec(q_segments=seg, kv_segments=seg, window=(20, 3)),
    "longformer": masks.MaskSpec(window=(3, 3), global_tokens=2),
    "causal_window_global": masks.MaskSpec(causal=True, window=(5, 0), global_tokens=3),
    "bigbird": masks.MaskSpec(sparse=masks.Sparse(block=8, window=1, global_blocks=1, random=1)),
    "causal_bigbird_segments": masks.MaskSpec(
      q_segments=seg,
      kv_segments=seg,
      causal=True,
      sparse=masks.Sparse(block=4, window=1, global_blocks=1, random=2, seed=1),
    ),
  }


def check(q, k, v, spec, bias=None):
  mask = spec.dense(q.shape[1], k.shape[1])
  mask = np.ones((1, 1, q.shape[1], k.shape[1]), bool) if mask is None else np.asarray(mask)
  sees = np.broadcast_to(mask, (B, H, q.shape[1], k.shape[1])).any(-1)  # [b, h, q]
  dout = np.random.default_rng(9).normal(size=q.shape) * np.transpose(sees, (0, 2, 1))[..., None]
  dout = dout.astype(np.float32)

  def f(q, k, v, bias):
    out = attention.attention(q, k, v, spec, bias, implementation="blockwise", blocks=BLOCKS)
    return jnp.sum(out * dout), out

  args = (
    jnp.asarray(q),
    jnp.asarray(k),
    jnp.asarray(v),
    None if bias is None else jnp.asarray(bias),
  )
  grads, out = jax.jit(
    jax.grad(f, argnums=(0, 1, 2, 3) if bias is not None else (0, 1, 2), has_aux=True)
  )(*args)
  want = reference(q, k, v, mask, bias, dout)
  got_out = np.asarray(out) * np.transpose(sees, (0, 2, 1))[..., None]  # Rows with a key.
  np.testing.assert_allclose(got_out, want[0] * np.transpose(sees, (0, 2, 1))[..., None], atol=1e-5)
  for name, g, w in zip(("dq", "dk", "dv"), grads[:3], want[1:4]):
    np.testing.assert_allclose(np.asarray(g), w, atol=1e-5, err_msg=name)
  if bias is not None:
    w = want[4].sum(0, keepdims=True) if bias.shape[0] == 1 else want[4]
    np.testing.assert_allclose(np.asarray(grads[3]), w, atol=1e-5, err_msg="dbias")
  return np.asarray(out)


@pytest.mark.parametrize("name", list(specs(37)))
@pytest.mark.parametrize("kv_heads", [H, 2, 1])
def test_self_attention_equals_the_float64_reference(name, kv_heads):
  q, k, v = inputs(37, 37, kv_heads, seed=kv_heads)  # 37 divides neither block size.
  check(q, k, v, specs(37)[name])


def test_cross_attention_with_padded_keys_and_a_bias():
  q, k, v = inputs(21, 45, 2, seed=3)
  kv_valid = np.ones((B, 45), np.int32)
  kv_valid[1, 30:] = 0
  bias = np.random.default_rng(4).normal(size=(1, H, 21, 45)).astype(np.float32)
  check(q, k, v, masks.MaskSpec(kv_segments=jnp.asarray(kv_valid)), bias)


def test_a_per_example_bias_gets_its_own_gradient():
  q, k, v = inputs(19, 19, H, seed=5)
  bias = np.random.default_rng(6).normal(size=(B, H, 19, 19)).astype(np.float32)
  check(q, k, v, masks.MaskSpec(causal=True), bias)


@pytest.mark.parametrize(
  "name", ["causal_segments", "window", "padding", "longformer", "causal_bigbird_segments"]
)
def test_equals_the_dense_path_given_the_same_mask(name):
  q, k, v = inputs(64, 64, 2, seed=7)
  spec = specs(64)[name]
  dense = attention.attention(q, k, v, spec, implementation="xla")
  block = attention.attention(q, k, v, spec, implementation="blockwise", blocks=BLOCKS)
  rows = np.asarray(spec.dense(64, 64)).any(-1)  # [b|1, 1, q]: queries that see a key.
  rows = np.broadcast_to(np.transpose(rows, (0, 2, 1))[..., None], dense.shape)
  np.testing.assert_allclose(np.where(rows, block, 0), np.where(rows, dense, 0), atol=1e-5)


def test_bfloat16_inputs_stay_close_to_float32():
  q, k, v = inputs(40, 40, 2, seed=8)
  spec = masks.MaskSpec(causal=True)
  f32 = attention.attention(q, k, v, spec, implementation="blockwise", blocks=BLOCKS)
  bf16 = attention.attention(
    *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)),
    spec,
    implementation="blockwise",
    blocks=BLOCKS,
  )
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf16, np.float32), f32, atol=0.05)


def test_the_bigbird_layout_is_the_papers_pattern():
  """Each query block: its window blocks, the global blocks and `random` others, drawn from
  the seed (the same layout every time, another one for another seed); global blocks see and
  are seen by every block; causal layouts stay below the diagonal."""
  sparse = masks.Sparse(block=8, window=1, global_blocks=2, random=3, seed=0)
  layout = masks.sparse_layout(sparse, 160, 160, False)  # 20 x 20 blocks.
  assert layout[:2].all() and layout[:, :2].all()
  for row in range(2, 20):
    window = {c for c in range(row - 1, row + 2) if 0 <= c < 20}
    randoms = set(np.flatnonzero(layout[row])) - window - {0, 1}
    assert len(randoms) == 3, (row, randoms)
  np.testing.assert_array_equal(layout, masks.sparse_layout(sparse._replace(seed=0), 160, 160, 0))
  assert (layout != masks.sparse_layout(sparse._replace(seed=1), 160, 160, False)).any()
  causal = masks.sparse_layout(sparse, 160, 160, True)
  assert not np.triu(causal, 1).any() and causal[5, :2].all()


def test_sparse_patterns_visit_a_number_of_blocks_linear_in_length():
  """At T=16384 in blocks of 128, a window of 256 each side visits 5 key blocks per query block;
  BigBird (blocks of 128: 3 window + 1 global + 3 random) at most 7, plus the global row: the
  dense pattern's 128 x 128 = 16384 pairs drop to a few hundred."""
  lengths, size = (16384, 16384), 128
  window = masks.block_layout(masks.Pattern(window=(256, 256)), lengths, size, size)
  assert window.sum(1).max() == 5 and window.sum() < 5 * 128
  bigbird = masks.Pattern(sparse=masks.Sparse(block=128, window=1, global_blocks=1, random=3))
  layout = masks.block_layout(bigbird, lengths, size, size)
  assert layout[1:].sum(1).max() == 7 and layout[0].all()
  assert layout.sum() <= 7 * 127 + 128 + 127
