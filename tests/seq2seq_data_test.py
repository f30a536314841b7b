"""Tests of the sequence-to-sequence pipeline: values against the records, resumption, shards."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs import lm
from jtrans import parts
from jtrans.data.seq2seq import make_seq2seq_dataset
from jtrans.data.tokenizers import ByteTokenizer

RECORDS = [{"source": f"{i}:" + "abc" * i, "target": f"t{i}" * (i % 4), "id": i} for i in range(10)]
SRC, SEQ = 8, 6


class PadIsEos(ByteTokenizer):
  """GPT-2's convention: no pad token, pad_id = eos_id."""

  pad_id = 1


BYTES = ByteTokenizer()


def pairs(tok=BYTES, records=RECORDS, **kwargs):
  args = dict(
    source=records,
    tokenizer=tok,
    source_key="source",
    target_key="target",
    source_len=SRC,
    seq_len=SEQ,
    batch_size=4,
    seed=0,
    train=True,
  )
  return make_seq2seq_dataset(**{**args, **kwargs})


def reference_row(record: dict, tok) -> dict[str, np.ndarray]:
  """A plain reimplementation: ids + EOS, cut to the row keeping EOS, padded with pad_id."""

  def side(text, n):
    ids = [b + 3 for b in text.encode()][: n - 1] + [tok.eos_id]
    return np.array(ids + [tok.pad_id] * (n - len(ids)), np.int32), len(ids)

  src, n_src = side(record["source"], SRC)
  tgt, n_tgt = side(record["target"], SEQ)
  return {
    "encoder_inputs": src,
    "encoder_mask": (np.arange(SRC) < n_src).astype(np.float32),
    "inputs": np.array([tok.pad_id, *tgt[:-1]], np.int32),
    "targets": tgt,
    "weights": (np.arange(SEQ) < n_tgt).astype(np.float32),
  }


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("tok", [ByteTokenizer(), PadIsEos()], ids=["pad0", "pad_is_eos"])
def test_eval_batches_equal_the_records(tok):
  batches = list(pairs(tok, train=False))
  assert len(batches) == 3  # 10 records in batches of 4: the last holds 2 real rows.
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  shapes = {
    "encoder_inputs": (12, SRC),
    "encoder_mask": (12, SRC),
    "inputs": (12, SEQ),
    "targets": (12, SEQ),
    "weights": (12, SEQ),
  }
  assert {k: v.shape for k, v in rows.items()} == shapes
  assert {k: v.dtype for k, v in rows.items()} == {
    "encoder_inputs": np.int32,
    "encoder_mask": np.float32,
    "inputs": np.int32,
    "targets": np.int32,
    "weights": np.float32,
  }
  for i, record in enumerate(RECORDS):
    for k, v in reference_row(record, tok).items():
      np.testing.assert_array_equal(rows[k][i], v, err_msg=f"record {i}, {k}")
  for k in rows:  # Padding rows: all zero, so weight 0 and mask 0.
    np.testing.assert_array_equal(rows[k][10:], 0)
  # Decoder inputs are the targets shifted right behind the start id (pad_id).
  np.testing.assert_array_equal(rows["inputs"][:10, 1:], rows["targets"][:10, :-1])
  np.testing.assert_array_equal(rows["inputs"][:10, 0], tok.pad_id)
  assert rows["weights"][3].tolist() == [1, 1, 1, 1, 1, 1]  # "t3t3t3" cut to 5 ids + EOS.
  assert rows["targets"][3, -1] == tok.eos_id and rows["encoder_inputs"][9, -1] == tok.eos_id
  assert rows["weights"][0].tolist() == [1, 0, 0, 0, 0, 0]  # Empty target: EOS only.


def test_train_epochs_are_seeded_permutations():
  batches = take(iter(pairs(batch_size=5)), 6)  # Three epochs of 10 records.
  sources = [tuple(r) for x in batches for r in x["encoder_inputs"]]
  for epoch in range(3):
    got = sorted(sources[10 * epoch : 10 * epoch + 10])
    assert got == sorted(
      tuple(reference_row(r, ByteTokenizer())["encoder_inputs"]) for r in RECORDS
    )
  assert sources[:10] != sources[10:20]  # A new order every epoch...
  assert_same(batches, take(iter(pairs(batch_size=5)), 6))  # ...fixed by the seed.
  assert sources != [
    tuple(r) for x in take(iter(pairs(batch_size=5, seed=1)), 6) for r in x["encoder_inputs"]
  ]


@pytest.mark.parametrize("start", [1, 2, 3])  # Batch 2 straddles epochs 0 and 1.
def test_resume_after_a_json_round_trip(start):
  reference = take(iter(pairs()), start + 4)
  it = iter(pairs())
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))
  take(it, 2)
  fresh = iter(pairs())
  fresh.set_state(state)
  assert_same(take(fresh, 4), reference[start:])


def test_shards_are_disjoint_and_cover():
  seen, counts = [], []
  for shard in range(3):
    batches = list(pairs(train=False, batch_size=2, shard_index=shard, shard_count=3))
    counts.append(len(batches))  # ceil(ceil(10 / 3) / 2) on every shard.
    for b in batches:
      for src, mask in zip(b["encoder_inputs"], b["encoder_mask"]):
        if mask.any():
          seen.append(tuple(src))
    assert sum(b["weights"].any(axis=1).sum() for b in batches) == len(RECORDS[shard::3])
  assert counts == [2, 2, 2]
  assert sorted(seen) == sorted(
    tuple(reference_row(r, ByteTokenizer())["encoder_inputs"]) for r in RECORDS
  )
  own = [
    {
      tuple(r)
      for x in take(iter(pairs(shard_index=s, shard_count=2)), 5)
      for r in x["encoder_inputs"]
    }
    for s in range(2)
  ]
  assert not own[0] & own[1]


def test_make_dataset_dispatches_seq2seq(data_dir):
  c = lm.get_config("tiny")
  c.loss.objective = "seq2seq"
  c.data.update({"name": "reverse_strings", "data_dir": data_dir, "seq_len": 40, "source_len": 0})
  c.train.batch_size = 4 * jax.process_count()
  batch = next(iter(parts.make_dataset(c, train=False)))
  assert batch["encoder_inputs"].shape == batch["targets"].shape == (4, 40)
  tok = ByteTokenizer()
  for src, tgt in zip(batch["encoder_inputs"], batch["targets"]):
    assert tok.decode(tgt) == tok.decode(src)[::-1] != ""
  c.loss.objective = "ranking"
  with pytest.raises(ValueError, match=r"config\.loss\.objective='ranking'"):
    parts.make_dataset(c, train=True)
