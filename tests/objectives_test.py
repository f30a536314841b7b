"""The objectives: BERT's masking rule, and the family each objective needs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jtrans import objectives


def test_masking_follows_bert_15_percent_80_10_10():
  tokens = jax.random.randint(jax.random.key(0), (64, 512), 3, 259)
  weights = jnp.ones(tokens.shape).at[:, 500:].set(0.0)  # Padding at the end of each row.
  batch = {"inputs": tokens, "targets": tokens, "weights": weights}
  out = jax.tree.map(
    np.asarray,
    objectives.mask_tokens(batch, jax.random.key(1), rate=0.15, mask_id=2, vocab_size=259),
  )
  chosen = out["weights"] > 0
  np.testing.assert_array_equal(out["targets"], np.asarray(tokens))
  assert not chosen[:, 500:].any()  # Padding is never a target.
  assert abs(chosen[:, :500].mean() - 0.15) < 0.005
  masked = out["inputs"] == 2
  kept = out["inputs"] == np.asarray(tokens)
  assert not (masked & ~chosen).any() and kept[~chosen].all()  # Only chosen tokens change.
  assert abs(masked[chosen].mean() - 0.8) < 0.01
  assert abs(kept[chosen].mean() - (0.1 + 0.1 / 259)) < 0.01  # Kept, or replaced by itself.
  random = chosen & ~masked & ~kept
  assert abs(random[chosen].mean() - 0.1 * 258 / 259) < 0.01


@pytest.mark.parametrize(
  "objective, family", [("mlm", "decoder"), ("seq2seq", "vit"), ("lm", "encoder")]
)
def test_an_objective_of_another_family_names_both_settings(objective, family):
  config = ml_collections.ConfigDict(
    {"loss": {"objective": objective}, "model": {"family": family}}
  )
  with pytest.raises(ValueError, match=r"config.loss.objective.*config.model.family"):
    objectives.check(config)
