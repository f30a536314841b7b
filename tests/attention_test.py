"""jtrans/attention.py against a plain float64 softmax attention written in numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import attention, masks

B, Q, H, D = 2, 7, 4, 8


def reference(q, k, v, mask):
  """softmax(q k^T / sqrt(d)) v in float64, masked entries dropped; q `[b, q, h, d]`."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  groups = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  mask = np.broadcast_to(np.asarray(mask), logits.shape)
  logits = np.where(mask, logits, -np.inf)
  row_max = np.max(np.where(mask, logits, -1e300), axis=-1, keepdims=True)
  weights = np.where(mask, np.exp(logits - row_max), 0.0)
  weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
  return np.einsum("bhqk,bkhd->bqhd", weights, v)


def random_qkv(kv_heads=H, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, Q, H, D)).astype(np.float32)
  k = rng.normal(size=(B, Q, kv_heads, D)).astype(np.float32)
  v = rng.normal(size=(B, Q, kv_heads, D)).astype(np.float32)
  return q, k, v


def example_masks():
  valid = np.ones((B, Q), bool)
  valid[0, 5:] = False  # Row 0 has two padding tokens at the end.
  segments = np.array([[1, 1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 2, 2, 0]])
  return {
    "none": np.ones((1, 1, Q, Q), bool),
    "causal": masks.causal_mask(Q),
    "padding": masks.padding_mask(jnp.asarray(valid)),
    "segment": masks.segment_mask(jnp.asarray(segments)),
    "causal+segment": masks.combine_masks(
      masks.causal_mask(Q), masks.segment_mask(jnp.asarray(segments))
    ),
  }


@pytest.mark.parametrize("name", list(example_masks()))
@pytest.mark.parametrize("kv_heads", [H, 2, 1])
def test_matches_float64_reference(name, kv_heads):
  q, k, v = random_qkv(kv_heads)
  mask = example_masks()[name]
  got = attention.dot_product_attention(q, k, v, mask if name != "none" else None)
  want = reference(q, k, v, mask)
  rows = np.asarray(jnp.broadcast_to(mask, (B, H, Q, Q))).any(-1)  # Queries with any key.
  rows = np.transpose(rows, (0, 2, 1))[..., None]
  np.testing.assert_array_less(np.abs(np.where(rows, np.asarray(got) - want, 0)), 1e-5)
  assert np.all(np.isfinite(np.asarray(got))), "fully masked rows must stay finite"


@pytest.mark.parametrize("name", ["causal", "padding", "causal+segment"])
def test_jax_implementation_matches_xla(name):
  q, k, v = random_qkv(2)
  mask = example_masks()[name]
  got = attention.dot_product_attention(q, k, v, mask, implementation="jax")
  want = attention.dot_product_attention(q, k, v, mask, implementation="xla")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_bfloat16_inputs_softmax_in_float32():
  q, k, v = random_qkv()
  got = attention.dot_product_attention(
    *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), masks.causal_mask(Q)
  )
  assert got.dtype == jnp.bfloat16
  want = reference(q, k, v, masks.causal_mask(Q))
  # bfloat16 inputs carry ~3 significant digits; a bfloat16 softmax would be far worse.
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2)


def test_causal_mask_with_offset_matches_positions():
  mask = np.asarray(masks.causal_mask(2, 5, offset=3))[0, 0]
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_unknown_implementation_names_the_setting():
  q, k, v = random_qkv()
  with pytest.raises(ValueError, match="config.model.attention_impl"):
    attention.dot_product_attention(q, k, v, implementation="flash")
