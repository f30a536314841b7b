"""config.loss.chunk_length: the loss computed a chunk of positions at a time equals the
unchunked loss and gradients, through every token family's train and eval sums, and the
compiled step of a GPT-2-vocabulary model at T=2048 needs far less memory."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import losses, steps
from jtrans.models import ModelConfig, build_model


def test_chunked_cross_entropy_equals_the_unchunked_loss_and_gradients():
  """Length 37 in chunks of 8 (the last one padded), with weights, smoothing and z-loss."""
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(3, 37, 16)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (3, 37)))
  weights = jnp.asarray(rng.random((3, 37)) > 0.2, jnp.float32)
  options = dict(label_smoothing=0.1, z_loss=1e-3)

  def sums(h, w, chunk):
    project = lambda x: x @ w
    if chunk:
      return losses.chunked_cross_entropy(
        h, project, targets, weights, chunk_length=chunk, **options
      )
    return losses.cross_entropy(project(h), targets, weights, **options)

  want, got = sums(hidden, table, 0), sums(hidden, table, 8)
  for name in losses.SUMS:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
  loss = lambda chunk: jax.grad(lambda h, w: sums(h, w, chunk)["loss"], (0, 1))(hidden, table)
  for g, w in zip(loss(8), loss(0)):  # Up to float32 summation order (2.5e-6 seen).
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-5)


FAMILIES = {
  "lm": dict(),
  "mlm": dict(family="encoder", norm_position="post", embed_norm=True),
  "seq2seq": dict(family="encoder_decoder", tie_embeddings=False),
}


@pytest.mark.parametrize("objective", list(FAMILIES))
def test_the_train_and_eval_sums_are_the_same_chunked(objective):
  """Every token family through `steps.loss_sums`: chunks of 4 over length 11."""
  cfg = ModelConfig(vocab_size=64, num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, max_len=16)
  model = build_model(dataclasses.replace(cfg, **FAMILIES[objective]))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 64, (2, 11)))
  batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, 1), "weights": jnp.ones((2, 11))}
  args = (tokens,)
  if objective == "seq2seq":
    batch |= {"encoder_inputs": tokens[:, ::-1], "encoder_mask": jnp.ones((2, 11))}
    args = (tokens[:, ::-1], tokens)
  params = nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])

  def sums(p, chunk, deterministic):
    settings = steps.StepSettings(objective, label_smoothing=0.1, z_loss=1e-3, chunk_length=chunk)
    return steps.loss_sums(model, p, batch, settings, None, deterministic=deterministic)

  for deterministic in (True, False):
    want, got = sums(params, 0, deterministic), sums(params, 4, deterministic)
    for name in losses.SUMS:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
  grads = [jax.grad(lambda p, c=c: sums(p, c, False)["loss"])(params) for c in (0, 4)]
  for g, w in zip(jax.tree.leaves(grads[1]), jax.tree.leaves(grads[0])):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_a_gpt2_vocabulary_step_at_t2048_needs_a_fraction_of_the_memory():
  """The tiny decoder with GPT-2's 50,257 tokens at T=2048, batch 1: the float32 logits and
  their gradient alone are 2 x 0.38 GiB; in chunks of 256 positions the compiled train step's
  temporaries shrink to under a third (figures: benchmarks/attention.py --loss)."""
  from configs import lm
  from jtrans import aot

  def temp_bytes(chunk):
    config = lm.get_config("tiny")
    config.model.vocab_size, config.data.tokenizer = 50257, "bytes"
    config.model.attention_impl = "blockwise"
    config.data.seq_len = config.model.max_len = 2048
    config.train.batch_size = jax.device_count()
    config.loss.chunk_length = chunk
    return aot.compile_report(config)["temp_bytes"]

  full, chunked = temp_bytes(0), temp_bytes(256)
  assert full > 2 * 2048 * 50257 * 4 * 0.9, full
  assert chunked < full / 3, (chunked, full)
