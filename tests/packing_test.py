"""Packed rows with segment ids: no token lost or repeated, and no attention across documents."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from jtrans import optim, parts, sharding, steps
from jtrans.data import pydoc_corpus
from jtrans.data.pipeline import make_lm_dataset
from jtrans.models import ModelConfig, build_model

SEQ = 64


def eval_batches(data_dir, segment_ids=True):
  return list(
    make_lm_dataset(
      name="pydoc_topics",
      split="validation",
      data_dir=data_dir,
      tokenizer="byte",
      text_key="text",
      seq_len=SEQ,
      batch_size=8,
      seed=0,
      train=False,
      segment_ids=segment_ids,
    )
  )


@pytest.fixture(scope="module")
def batches(data_dir):
  return eval_batches(data_dir)


def test_an_epoch_of_packed_rows_loses_and_repeats_no_token(batches):
  topics = pydoc_corpus.load_topics()
  names = sorted(pydoc_corpus.validation_topics(topics))
  want = np.concatenate(
    [np.concatenate([np.frombuffer(topics[n].encode(), np.uint8) + 3, [1]]) for n in names]
  )
  targets = np.concatenate([b["targets"][b["weights"] > 0] for b in batches])
  np.testing.assert_array_equal(targets, want)


def test_segments_and_positions_restart_per_document(batches):
  for batch in batches:
    for seg, pos, inputs in zip(batch["segment_ids"], batch["positions"], batch["inputs"]):
      real = seg > 0
      starts = np.flatnonzero(np.diff(seg[real], prepend=-1) != 0)
      np.testing.assert_array_equal(pos[real][starts], 0)  # Each piece starts at position 0,
      steps_within = np.diff(pos[real])[np.diff(seg[real]) == 0]
      np.testing.assert_array_equal(steps_within, 1)  # and counts up inside it.
      later = starts[1:]  # A document that starts inside a row starts with EOS.
      np.testing.assert_array_equal(inputs[real][later], 1)


def test_changing_document_a_changes_no_logit_of_document_b(batches):
  cfg = ModelConfig(num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=SEQ)
  model = build_model(cfg)
  row = next(i for b in batches for i in range(8) if len(set(b["segment_ids"][i])) == 2)
  batch = next(b for b in batches if len(set(b["segment_ids"][row])) == 2)
  seg, pos, tokens = (batch[k][row : row + 1] for k in ("segment_ids", "positions", "inputs"))
  params = nn.meta.unbox(model.init(jax.random.key(0), tokens)["params"])
  first = seg[0] == seg[0, 0]
  changed = tokens.copy()
  changed[0, 0] = (changed[0, 0] + 7) % 259  # A token of document A.

  def logits(t, packed=True):
    kwargs = {"segment_ids": seg, "positions": pos} if packed else {}
    return np.asarray(model.apply({"params": params}, t, **kwargs))

  np.testing.assert_array_equal(logits(tokens)[0, ~first], logits(changed)[0, ~first])
  # Without the segment mask, document B does see document A: the test above can fail.
  assert np.abs(logits(tokens, False)[0, ~first] - logits(changed, False)[0, ~first]).max() > 1e-6


def test_a_sharded_train_step_on_packed_rows_has_the_loss_of_each_document_alone(
  tiny_config, batches
):
  c = tiny_config
  c.data.seq_len = c.model.max_len = SEQ
  c.data.segment_ids = True
  mesh = sharding.make_mesh(c.mesh)
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  state, shardings, _ = parts.init_state(model, tx, c, mesh)
  params = jax.device_get(state.params)  # The step donates the state.
  engine = steps.jit_engine(model, tx, c, mesh, shardings)
  batch = batches[0]
  with engine.context():
    _, metrics = engine.train_step(state, engine.place_batch(batch))
  assert float(metrics["tokens"]) == batch["weights"].sum()
  # Reference: every document piece of every row run through the model by itself, from
  # position 0, in float64 from its logits.
  total, count = 0.0, 0.0
  for row in range(batch["inputs"].shape[0]):
    segments = batch["segment_ids"][row]
    for segment in set(segments[segments > 0].tolist()):
      where = segments == segment
      logits = np.asarray(
        model.apply({"params": params}, batch["inputs"][row, where][None]), np.float64
      )[0]
      logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
      )
      weights = batch["weights"][row, where]
      total -= (logp[np.arange(len(logp)), batch["targets"][row, where]] * weights).sum()
      count += weights.sum()
  assert count == batch["weights"].sum()
  np.testing.assert_allclose(float(metrics["loss"]), total / count, rtol=1e-5)
