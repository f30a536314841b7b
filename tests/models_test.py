"""The decoder LM and its blocks: causality, options, logical axis names, config errors."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import positional
from jtrans.models import ModelConfig, build_model

CFG = ModelConfig(vocab_size=50, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=16)


def init(cfg, length=12):
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(1), (2, length), 0, cfg.vocab_size)
  boxed = model.init(jax.random.key(0), tokens)["params"]
  return model, boxed, tokens


@pytest.mark.parametrize(
  "options",
  [
    {},
    {
      "positions": "sinusoidal",
      "tie_embeddings": False,
      "norm": "rmsnorm",
      "use_bias": False,
      "num_kv_heads": 2,
    },
  ],
)
def test_causal_changing_token_t_changes_no_earlier_logit(options):
  cfg = dataclasses.replace(CFG, **options)
  model, boxed, tokens = init(cfg)
  params = nn.meta.unbox(boxed)
  t = 6
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % cfg.vocab_size)
  before, after = model.apply({"params": params}, tokens), model.apply({"params": params}, changed)
  np.testing.assert_array_equal(np.asarray(before[:, :t]), np.asarray(after[:, :t]))
  assert np.abs(np.asarray(before[:, t:] - after[:, t:])).max() > 1e-4


def test_segments_block_attention_across_documents():
  model, boxed, tokens = init(CFG)
  params = nn.meta.unbox(boxed)
  segments = jnp.array([[1] * 5 + [2] * 7] * 2)
  positions = jnp.array([list(range(5)) + list(range(7))] * 2)
  changed = tokens.at[:, 1].set((tokens[:, 1] + 1) % CFG.vocab_size)  # Inside document 1.
  apply = lambda t: model.apply({"params": params}, t, positions=positions, segment_ids=segments)
  np.testing.assert_array_equal(np.asarray(apply(tokens)[:, 5:]), np.asarray(apply(changed)[:, 5:]))


def test_every_parameter_has_logical_axis_names():
  for options in ({}, {"tie_embeddings": False, "norm": "rmsnorm", "use_bias": False}):
    _, boxed, _ = init(dataclasses.replace(CFG, **options))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:
      assert isinstance(leaf, nn.LogicallyPartitioned), leaf
      assert len(leaf.names) == leaf.value.ndim


def test_tied_embeddings_have_no_output_matrix():
  _, tied, _ = init(CFG)
  _, untied, _ = init(dataclasses.replace(CFG, tie_embeddings=False))
  assert "logits" not in tied and untied["logits"]["output"]["kernel"].value.shape == (32, 50)


@pytest.mark.parametrize("tie", [True, False])
def test_bfloat16_compute_gives_float32_logits_of_the_bfloat16_hidden_states(tie):
  cfg = dataclasses.replace(CFG, dtype=jnp.bfloat16, tie_embeddings=tie)
  model, boxed, tokens = init(cfg)
  params = nn.meta.unbox(boxed)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits, seen = model.apply({"params": params}, tokens, capture_intermediates=True)
  assert logits.dtype == jnp.float32
  # The last hidden states, in bfloat16, as the output projection receives them.
  hidden = seen["intermediates"]["decoder"]["final_norm"]["__call__"][0]
  assert hidden.dtype == jnp.bfloat16
  table = (
    params["embed"]["token_embed"]["embedding"].T if tie else params["logits"]["output"]["kernel"]
  )
  # float32 reference of the same bfloat16 operands: exact products, float32 sums.
  want = np.asarray(hidden, np.float32) @ np.asarray(jnp.asarray(table, jnp.bfloat16), np.float32)
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5)
  # And the bfloat16 model stays close to the float32 one.
  full = build_model(dataclasses.replace(CFG, tie_embeddings=tie)).apply({"params": params}, tokens)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(full), atol=0.1)


def test_sinusoidal_matches_the_formula():
  pos = np.arange(6)[None]
  got = np.asarray(positional.sinusoidal(jnp.asarray(pos), 8))[0]
  inv = 10000.0 ** (-2 * np.arange(4) / 8)  # The paper's 1 / 10000^(2i / d).
  np.testing.assert_allclose(got[:, :4], np.sin(pos[0][:, None] * inv), atol=1e-6)
  np.testing.assert_allclose(got[:, 4:], np.cos(pos[0][:, None] * inv), atol=1e-6)


@pytest.mark.parametrize(
  "change, key",
  [
    ({"num_heads": 5}, "config.model.num_heads"),
    ({"num_kv_heads": 3}, "config.model.num_kv_heads"),
    ({"norm": "batchnorm"}, "config.model.norm"),
    ({"positions": "alibi"}, "config.model.positions"),
    ({"positions": "rotary", "embed_dim": 36, "num_heads": 4}, "config.model.positions"),
  ],
)
def test_bad_shapes_fail_naming_the_setting(change, key):
  with pytest.raises(ValueError, match=key):
    dataclasses.replace(CFG, **change)


def test_norm_none_is_the_identity_and_has_no_parameters():
  """norm="none" (Nanda et al.'s grokking model): no norm parameters, logits are the last hidden
  state times the output matrix, and with the branches' output projections zeroed the residual
  stream is the embeddings themselves (any norm on the way would rescale them)."""
  cfg = dataclasses.replace(CFG, norm="none", num_layers=1, use_bias=False, tie_embeddings=False)
  model, boxed, tokens = init(cfg)
  params = nn.meta.unbox(boxed)
  paths = ["/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert paths and not [p for p in paths if "norm" in p], paths
  hidden = model.apply({"params": params}, tokens, hidden=True)
  logits = model.apply({"params": params}, tokens)
  kernel = params["logits"]["output"]["kernel"]
  np.testing.assert_allclose(logits, hidden @ kernel, rtol=1e-5, atol=1e-5)
  block = params["decoder"]["block_0"]
  zeroed = jax.tree.map(lambda x: x, params)
  zeroed["decoder"]["block_0"] = {
    **block,
    "attention": {**block["attention"], "out": {"kernel": 0 * block["attention"]["out"]["kernel"]}},
    "mlp": {**block["mlp"], "wo": {"kernel": 0 * block["mlp"]["wo"]["kernel"]}},
  }
  embedded = (
    params["embed"]["token_embed"]["embedding"][tokens]
    + params["embed"]["position_embed"]["embedding"][: tokens.shape[1]]
  )
  np.testing.assert_allclose(
    model.apply({"params": zeroed}, tokens, hidden=True), embedded, rtol=1e-6, atol=1e-6
  )


def test_weight_init_glorot_and_residual_scaling():
  """model.init_std=0 draws each matrix with Glorot's std sqrt(2 / (fan_in + fan_out)) (the
  heads axes of q and out counted as one); scale_residual_init divides the projections into
  the residual stream by sqrt(2 x layers); the default is normal(0.02) as before."""
  wide = dataclasses.replace(CFG, embed_dim=256, num_heads=4, mlp_dim=1024, num_layers=2)

  def stds(cfg):
    block = nn.unbox(init(cfg)[1])["decoder"]["block_0"]
    q, out = block["attention"]["query"]["kernel"], block["attention"]["out"]["kernel"]
    wi, wo = block["mlp"]["wi"]["kernel"], block["mlp"]["wo"]["kernel"]
    return [float(np.std(np.asarray(w))) for w in (q, out, wi, wo)]

  glorot = stds(dataclasses.replace(wide, init_std=0.0, scale_residual_init=False))
  expected = [(2 / 512) ** 0.5, (2 / 512) ** 0.5, (2 / 1280) ** 0.5, (2 / 1280) ** 0.5]
  np.testing.assert_allclose(glorot, expected, rtol=0.03)
  scaled = stds(dataclasses.replace(wide, init_std=0.0, scale_residual_init=True))
  np.testing.assert_allclose(
    scaled, [expected[0], expected[1] / 2, expected[2], expected[3] / 2], rtol=0.03
  )
  np.testing.assert_allclose(stds(wide), [0.02, 0.01, 0.02, 0.01], rtol=0.03)
  for std in (0.01, 0.02):  # GPT-2's and BERT's learned position tables.
    table = nn.unbox(init(dataclasses.replace(wide, max_len=512, position_init_std=std))[1])
    assert np.std(np.asarray(table["embed"]["position_embed"]["embedding"])) == pytest.approx(
      std, rel=0.03
    )
