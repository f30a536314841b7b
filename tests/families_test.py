"""The model families and their shared pieces against references: rotary and T5 relative
positions against numpy written from the papers, bidirectional vs causal attention, the KV
cache against the full forward pass, ViT patches, and published parameter counts."""

import dataclasses
import importlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import flops, positional
from jtrans.models import ModelConfig, build_model

BASE = ModelConfig(vocab_size=50, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=16)
T5_LIKE = dict(
  positions="relative",
  norm="rmsnorm",
  gated_mlp=True,
  use_bias=False,
  tie_embeddings=False,
  relative_buckets=8,
  relative_max_distance=12,
)
LLAMA_LIKE = dict(
  positions="rotary",
  num_kv_heads=2,
  norm="rmsnorm",
  gated_mlp=True,
  activation="silu",
  use_bias=False,
  tie_embeddings=False,
)
VASWANI_LIKE = dict(
  positions="sinusoidal",
  norm_position="post",
  scale_embeddings=True,
  activation="relu",
  output_bias=True,
)


def test_rotary_rotates_each_pair_by_position_times_frequency():
  x = np.random.default_rng(0).normal(size=(2, 5, 3, 8))
  positions = np.array([[0, 1, 2, 3, 4], [7, 3, 0, 9, 2]])
  got = np.asarray(positional.rotary(jnp.asarray(x, jnp.float32), jnp.asarray(positions)))
  # Feature i pairs with feature i + 4 as a complex number, rotated by pos * 10000^(-2i/8).
  z = x[..., :4] + 1j * x[..., 4:]
  angle = positions[:, :, None, None] * 10000.0 ** (-2 * np.arange(4) / 8)
  want = z * np.exp(1j * angle)
  np.testing.assert_allclose(got, np.concatenate([want.real, want.imag], -1), atol=1e-5)


def test_rotary_attention_scores_depend_only_on_relative_position():
  q, k = np.random.default_rng(1).normal(size=(2, 1, 1, 1, 8))

  def score(i, j):
    rq = positional.rotary(jnp.asarray(q, jnp.float32), jnp.array([[i]]))
    rk = positional.rotary(jnp.asarray(k, jnp.float32), jnp.array([[j]]))
    return float(jnp.sum(rq * rk))

  assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-4)


def t5_bucket(relative, bidirectional, num_buckets, max_distance):
  """T5's bucketing, transcribed from Mesh TensorFlow's `_relative_position_bucket` in plain
  Python floats."""
  ret, n = 0, -relative
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0) * num_buckets
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return ret + n
  large = max_exact + int(
    math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  )
  return ret + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_mesh_tensorflow(bidirectional):
  relative = np.arange(-300, 301)
  got = np.asarray(
    positional.relative_position_bucket(
      jnp.asarray(relative), bidirectional=bidirectional, num_buckets=32, max_distance=128
    )
  )
  want = [t5_bucket(r, bidirectional, 32, 128) for r in relative]
  np.testing.assert_array_equal(got, want)


def init(cfg, *inputs):
  model = build_model(cfg)
  return model, nn.meta.unbox(model.init(jax.random.key(0), *inputs)["params"])


def test_encoder_attends_both_ways_and_respects_padding():
  cfg = dataclasses.replace(
    BASE,
    family="encoder",
    norm_position="post",
    embed_norm=True,
    type_vocab_size=2,
    output_bias=True,
    activation="gelu_exact",
  )
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 50)
  model, params = init(cfg, tokens)
  changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 50)
  before = model.apply({"params": params}, tokens)
  assert (
    np.abs(np.asarray(before[:, :7] - model.apply({"params": params}, changed)[:, :7])).max() > 1e-4
  )
  # Padding (segment 0) is invisible: changing a padded token changes no real position.
  segments = jnp.array([[1] * 6 + [0] * 4] * 2)
  apply = lambda t: model.apply({"params": params}, t, segment_ids=segments)
  np.testing.assert_allclose(
    np.asarray(apply(tokens)[:, :6]), np.asarray(apply(changed)[:, :6]), atol=1e-6
  )


@pytest.mark.parametrize(
  "options", [{}, LLAMA_LIKE, T5_LIKE, VASWANI_LIKE, {**LLAMA_LIKE, "scan_layers": True}]
)
def test_decoder_kv_cache_reproduces_the_full_forward(options):
  cfg = dataclasses.replace(BASE, **options)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  model, params = init(cfg, tokens)
  full = model.apply({"params": params}, tokens)
  cache = model.init(jax.random.key(0), jnp.zeros((2, 16), jnp.int32), decode=True)["cache"]
  logits, mutated = model.apply(
    {"params": params, "cache": cache},
    tokens[:, :5],
    decode=True,
    positions=jnp.broadcast_to(jnp.arange(5), (2, 5)),
    mutable=["cache"],
  )
  steps = [logits]
  for t in range(5, 12):
    logits, mutated = model.apply(
      {"params": params, **mutated},
      tokens[:, t : t + 1],
      positions=jnp.full((2, 1), t),
      decode=True,
      mutable=["cache"],
    )
    steps.append(logits)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-5)


@pytest.mark.parametrize("options", [VASWANI_LIKE, {**T5_LIKE, "scan_layers": True}])
def test_encoder_decoder_cache_reproduces_the_full_forward(options):
  cfg = dataclasses.replace(BASE, family="encoder_decoder", num_encoder_layers=3, **options)
  source = jax.random.randint(jax.random.key(2), (2, 9), 0, 50)
  source_mask = jnp.array([[1] * 9, [1] * 6 + [0] * 3])
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  model, params = init(cfg, source, tokens)
  encoder = params["encoder"]
  depth = (
    jax.tree.leaves(encoder["layers"])[0].shape[0]
    if "layers" in encoder
    else len([k for k in encoder if k.startswith("block_")])
  )
  assert depth == 3  # num_encoder_layers, not num_layers.
  full = model.apply({"params": params}, source, tokens, encoder_mask=source_mask)
  cache = model.init(
    jax.random.key(0), source, jnp.zeros((2, 16), jnp.int32), encoder_mask=source_mask, decode=True
  )["cache"]
  encoded = model.apply({"params": params}, source, source_mask, method=model.encode)
  logits, mutated = model.apply(
    {"params": params, "cache": cache},
    None,
    tokens[:, :1],
    encoded=encoded,
    encoder_mask=source_mask,
    decode=True,
    positions=jnp.zeros((2, 1), jnp.int32),
    mutable=["cache"],
  )
  steps = [logits]
  for t in range(1, 12):
    logits, mutated = model.apply(
      {"params": params, **mutated},
      None,
      tokens[:, t : t + 1],
      encoder_mask=source_mask,
      positions=jnp.full((2, 1), t),
      decode=True,
      mutable=["cache"],
    )
    steps.append(logits)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-5)
  # Source padding is invisible to the decoder.
  changed = source.at[1, 7].set((source[1, 7] + 1) % 50)
  np.testing.assert_allclose(
    np.asarray(model.apply({"params": params}, changed, tokens, encoder_mask=source_mask)),
    np.asarray(full),
    atol=1e-6,
  )


def test_vit_patches_are_row_major_pixels_and_pooling_options_classify():
  from jtrans.models.vit import patchify

  images = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
  patches = np.asarray(patchify(jnp.asarray(images), 4))
  assert patches.shape == (2, 4, 48)
  np.testing.assert_array_equal(patches[1, 2], images[1, 4:8, 0:4].reshape(-1))  # Row 1, column 0.
  for pool in ("cls", "mean"):
    cfg = dataclasses.replace(
      BASE, family="vit", image_size=8, patch_size=4, num_classes=7, pool=pool
    )
    model, params = init(cfg, jnp.asarray(images))
    assert ("cls_token" in params) == (pool == "cls")
    assert params["position_embed"].shape == (1, 4 + (pool == "cls"), 32)
    logits, seen = model.apply({"params": params}, jnp.asarray(images), capture_intermediates=True)
    encoded = np.asarray(seen["intermediates"]["encoder"]["__call__"][0], np.float64)
    pooled = encoded[:, 0] if pool == "cls" else encoded.mean(axis=1)  # [batch, embed]
    head = params["head"]
    want = pooled @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)


def test_vit_plain_baseline_sincos2d_gap_pre_logits_and_zero_head():
  """Beyer et al. 2022's plain ViT (big_vision): the fixed 2-D sine-cosine table added to the
  patches (no learned table, no class token), global average pooling, a tanh pre-logits layer
  and a head that starts at 0, against float64 numpy written from big_vision's formula."""
  from jtrans.models.vit import patchify

  images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  cfg = dataclasses.replace(
    BASE,
    family="vit",
    image_size=8,
    patch_size=2,
    num_classes=7,
    pool="mean",
    positions="sincos2d",
    pre_logits=True,
    head_zero_init=True,
  )
  model, params = init(cfg, jnp.asarray(images))
  assert "position_embed" not in params and "cls_token" not in params
  assert not np.asarray(params["head"]["kernel"]).any()
  # Patch (row y, column x) of the 4 x 4 grid: [sin(x w), cos(x w), sin(y w), cos(y w)] with
  # w_k = 10000^(-k / 7), k < 8 (32 / 4 frequencies).
  w = 10000.0 ** (-np.arange(8) / 7)
  table = np.array(
    [
      np.concatenate([np.sin(x * w), np.cos(x * w), np.sin(y * w), np.cos(y * w)])
      for y in range(4)
      for x in range(4)
    ]
  )
  embed = params["patch_embed"]
  patches = np.asarray(patchify(jnp.asarray(images), 2), np.float64)
  want_input = patches @ np.asarray(embed["kernel"], np.float64) + np.asarray(embed["bias"])
  want_input += table
  params["head"]["kernel"] = jnp.asarray(np.random.default_rng(1).normal(size=(32, 7)), jnp.float32)
  logits, seen = model.apply({"params": params}, jnp.asarray(images), capture_intermediates=True)
  encoded = np.asarray(seen["intermediates"]["encoder"]["__call__"][0], np.float64)
  pre = params["pre_logits"]
  pooled = np.tanh(
    encoded.mean(axis=1) @ np.asarray(pre["kernel"], np.float64) + np.asarray(pre["bias"])
  )
  head = params["head"]
  want = pooled @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)
  # The encoder's input (the dropout's output) is the embedded patches plus the table.
  encoder_input = np.asarray(seen["intermediates"]["Dropout_0"]["__call__"][0], np.float64)
  np.testing.assert_allclose(encoder_input, want_input, atol=1e-5)
  with pytest.raises(ValueError, match="sincos2d"):
    dataclasses.replace(BASE, positions="sincos2d")


# Published sizes whose exact parameter counts are known (the Hugging Face checkpoints').
PUBLISHED = [
  ("llama.py", "7b", 6_738_415_616),
  ("t5.py", "small", 76_961_152),
  ("t5.py", "base", 247_577_856),
  ("vit.py", "b", 86_567_656),
  ("bert.py", "base", 109_514_298),
]


@pytest.mark.parametrize("file, size, count", PUBLISHED)
def test_published_sizes_have_the_published_parameter_counts(file, size, count):
  config = importlib.import_module(f"configs.{file[:-3]}").get_config(size)
  assert flops.tree_param_counts(ModelConfig.from_config(config.model)).total == count
