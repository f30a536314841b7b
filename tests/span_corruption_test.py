"""T5's span corruption: the worked example of the paper's Figure 2, exact reconstruction, the
noise density and mean span length on average, and T5's input/target lengths."""

import numpy as np
import pytest

from jtrans.data import span_corruption as sc

VOCAB, EOS = 1000, 1


def test_the_papers_figure_2_example():
  """ "Thank you for inviting me to your party last week." with "for inviting" and "last"
  dropped: inputs "Thank you <X> me to your party <Y> week", targets "<X> for inviting <Y> last
  <Z>" (the figure, with sentinels <X>, <Y>, <Z> = ids vocab-1, vocab-2, vocab-3)."""
  words = "Thank you for inviting me to your party last week".split()
  word = {w: i for i, w in enumerate(words, start=10)}
  ids = np.array([word[w] for w in words])
  mask = np.array([w in ("for", "inviting", "last") for w in words])
  inputs, targets = sc.corrupt(ids, mask, VOCAB, EOS)
  x, y, z = VOCAB - 1, VOCAB - 2, VOCAB - 3
  said = lambda text: [word[w] for w in text.split()]
  assert inputs.tolist() == said("Thank you") + [x] + said("me to your party") + [y] + said(
    "week"
  ) + [EOS]
  assert targets.tolist() == [x] + said("for inviting") + [y] + said("last") + [z, EOS]
  np.testing.assert_array_equal(sc.reconstruct(inputs, targets, VOCAB, EOS), ids)


@pytest.mark.parametrize("length", [2, 3, 10, 64, 568])
def test_inputs_and_targets_reconstruct_the_tokens(length):
  rng = np.random.default_rng(length)
  for _ in range(50):
    tokens = rng.integers(3, 259, length).astype(np.int32)
    mask = sc.noise_mask(length, rng)
    inputs, targets = sc.corrupt(tokens, mask, VOCAB, EOS)
    np.testing.assert_array_equal(sc.reconstruct(inputs, targets, VOCAB, EOS), tokens)
    spans = int((mask & ~np.concatenate([[False], mask[:-1]])).sum())
    # Sentinels in order, once each, in both; T5's layout: non-noise first, noise last.
    sentinels = list(range(VOCAB - 1, VOCAB - 1 - spans, -1))
    assert [t for t in inputs if t >= VOCAB - spans] == sentinels
    assert [t for t in targets if t >= VOCAB - spans] == sentinels
    assert not mask[0] and mask[-1]
    assert len(inputs) == (~mask).sum() + spans + 1 and len(targets) == mask.sum() + spans + 1


def test_noise_density_and_mean_span_length_hold_on_average():
  rng = np.random.default_rng(0)
  masks = np.stack([sc.noise_mask(568, rng) for _ in range(2000)])
  starts = masks & ~np.concatenate([np.zeros((len(masks), 1), bool), masks[:, :-1]], axis=1)
  assert abs(masks.mean() - 0.15) < 0.002
  assert abs(masks.sum() / starts.sum() - 3.0) < 0.05
  # Spans land everywhere: every tenth of the sequence holds about its share of the noise.
  by_tenth = masks[:, :560].reshape(len(masks), 10, 56).mean(axis=(0, 2))
  assert by_tenth.min() > 0.12 and by_tenth.max() < 0.18, by_tenth
  # And the span lengths vary (a geometric-like spread around the mean, not all 3).
  lengths = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], masks[0].astype(int), [0]]))))[::2]
  assert len(set(lengths.tolist())) > 1


def test_lengths_are_t5s():
  """T5's random_spans_helper: 512 encoder tokens take 568 raw tokens and 114 target tokens
  (the numbers of T5's pre-training setup); the corrupted input of that many fills 512."""
  assert sc.lengths(512) == (568, 114)
  rng = np.random.default_rng(1)
  inputs, targets = sc.corrupt(np.arange(3, 571), sc.noise_mask(568, rng), 32128, EOS)
  assert len(inputs) == 512 and len(targets) == 114
