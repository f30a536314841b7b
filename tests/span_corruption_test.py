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


# ---------------------------------------------------------------- the span_corruption objective


def span_config(data_dir):
  """configs/t5.py:tiny shrunk, pre-training with span corruption on the embedded corpus (bytes,
  so ByT5's 384-id vocabulary leaves room for the sentinels)."""
  from configs import t5

  c = t5.get_config("tiny")
  c.loss.objective = "span_corruption"
  c.model.vocab_size = 384
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 1, 32, 2, 64
  c.data.update({"name": "pydoc_topics", "data_dir": data_dir, "source_len": 48})
  c.data.seq_len = sc.lengths(48)[1]
  c.train.batch_size = 4
  return c


def test_span_corruption_batches_reconstruct_the_packed_text(data_dir):
  """Every row of a train and an eval batch of objective "span_corruption" is a corrupted row of
  the packed text stream (the "lm" pipeline's rows of `lengths(source_len)[0]` tokens, same
  seed): `reconstruct` gives that row back; the decoder reads the targets shifted right after
  the start id; about 15% of the tokens are noise. A vocabulary without room for the
  sentinels, or targets longer than data.seq_len, is refused naming the setting."""
  from jtrans import parts
  from jtrans.data import pipeline
  from jtrans.data.tokenizers import ByteTokenizer

  c = span_config(data_dir)
  raw, target_len = sc.lengths(48)
  tok = ByteTokenizer()
  for train in (True, False):
    batch = next(iter(parts.make_dataset(c, train=train)))
    assert batch["encoder_inputs"].shape == (4, 48)
    assert batch["targets"].shape == batch["inputs"].shape == (4, target_len)
    plain = next(
      iter(
        pipeline.make_lm_dataset(
          name="pydoc_topics",
          split="train" if train else "validation",
          data_dir=data_dir,
          tokenizer=tok,
          text_key="text",
          seq_len=raw,
          batch_size=4,
          seed=c.seed,
          train=train,
          shuffle_window=c.data.shuffle_window,
        )
      )
    )
    noise = 0
    for r in range(4):
      n_in, n_out = int(batch["encoder_mask"][r].sum()), int(batch["weights"][r].sum())
      source, targets = batch["encoder_inputs"][r][:n_in], batch["targets"][r][:n_out]
      assert source[-1] == targets[-1] == tok.eos_id
      np.testing.assert_array_equal(
        sc.reconstruct(source, targets, 384, tok.eos_id), plain["inputs"][r]
      )
      np.testing.assert_array_equal(batch["inputs"][r][1:n_out], targets[:-1])
      assert batch["inputs"][r][0] == tok.pad_id
      noise += int((targets < 384 - 48).sum()) - 1  # Real tokens in the targets, less EOS.
    assert abs(noise / (4 * raw) - 0.15) < 0.03
  c.model.vocab_size = 259
  with pytest.raises(ValueError, match=r"config\.model\.vocab_size to at least"):
    parts.make_dataset(c, train=True)
  c.model.vocab_size, c.data.seq_len = 384, target_len - 1
  with pytest.raises(ValueError, match=rf"config\.data\.seq_len to at least {target_len}"):
    parts.make_dataset(c, train=True)


def test_span_corruption_trains_through_the_loop(data_dir, tmp_path):
  """The objective through `train.train`: the loss falls from the uniform level (ln 384) on
  the corrupted pairs within 30 steps."""
  import json
  import math

  from jtrans import train

  c = span_config(data_dir)
  c.train.steps, c.train.eval_every, c.train.checkpoint_every, c.train.eval_batches = 30, 30, 30, 2
  c.optim.warmup_steps, c.train.batch_size = 10, 8  # 8 devices on the data axis.
  train.train(c, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  (final,) = [r for r in records if r["split"] == "eval"]
  assert final["nll"] < math.log(384) - 1.5, final
