"""data.sampling="prompt_response": a decoder-only row per (prompt, response) record with loss on
the response alone (grokking's answer-only loss), checked against a plain reimplementation, and
the real path: grokking's TFDS equations through the word tokenizer and parts.make_dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jtrans import parts
from jtrans.data import pipeline, sources
from jtrans.data.seq2seq import make_prompt_response_dataset
from jtrans.data.tokenizers import ByteTokenizer

RECORDS = [
  {"source": "q" * (i % 3) + f"{i}?", "target": "a" * (i % 4), "index": i} for i in range(10)
]
SEQ = 9
BYTES = ByteTokenizer()


def rows(records=RECORDS, **kwargs):
  args = dict(
    source=records,
    tokenizer=BYTES,
    source_key="source",
    target_key="target",
    seq_len=SEQ,
    batch_size=4,
    seed=0,
    train=True,
  )
  return make_prompt_response_dataset(**{**args, **kwargs})


def reference_row(record: dict, eos: bool = True) -> dict[str, np.ndarray]:
  """The stream prompt + response (+ EOS), shifted by one; weight 1 where the target is the
  response's (or its EOS)."""
  prompt = [b + 3 for b in record["source"].encode()] or [BYTES.eos_id]
  response = [b + 3 for b in record["target"].encode()] + [BYTES.eos_id] * eos
  stream = prompt + response
  n = len(stream) - 1
  pad = [BYTES.pad_id] * (SEQ - n)
  return {
    "inputs": np.array(stream[:-1] + pad, np.int32),
    "targets": np.array(stream[1:] + pad, np.int32),
    "weights": np.array(
      [0.0] * (len(prompt) - 1) + [1.0] * len(response) + [0.0] * len(pad), np.float32
    ),
  }


def take(it, n):
  return [next(it) for _ in range(n)]


def as_rows(batches) -> list[tuple]:
  return [
    tuple(np.concatenate([b["inputs"][i], b["targets"][i], b["weights"][i]]))
    for b in batches
    for i in range(len(b["inputs"]))
  ]


def row_key(r: dict) -> tuple:
  return tuple(np.concatenate([r["inputs"], r["targets"], r["weights"]]))


@pytest.mark.parametrize("eos", [True, False])
def test_eval_batches_are_the_records_in_order_with_answer_only_weights(eos):
  batches = list(rows(train=False, response_eos=eos))
  assert len(batches) == math.ceil(len(RECORDS) / 4)
  got = as_rows(batches)
  want = [row_key(reference_row(r, eos)) for r in RECORDS]
  assert got[: len(RECORDS)] == want
  for pad in batches[-1]["weights"][len(RECORDS) % 4 :]:
    assert not pad.any()  # Padding rows count for nothing.
  # Weighted tokens: exactly the responses (and their EOS).
  total = sum(b["weights"].sum() for b in batches)
  assert total == sum(len(r["target"]) + eos for r in RECORDS)
  for b in batches:
    assert b["inputs"].dtype == b["targets"].dtype == np.int32 and b["weights"].dtype == np.float32


def test_full_batch_training_sees_every_record_each_step_in_a_seeded_order():
  n = len(RECORDS)
  batches = take(iter(rows(batch_size=n)), 3)
  want = sorted(row_key(reference_row(r)) for r in RECORDS)
  for b in batches:
    assert sorted(as_rows([b])) == want  # Every record once: full-batch gradient descent.
  assert as_rows(batches[:1]) != as_rows(batches[1:2])  # A new order each epoch...
  assert as_rows(batches) == as_rows(take(iter(rows(batch_size=n)), 3))  # ...from the seed.
  assert as_rows(batches) != as_rows(take(iter(rows(batch_size=n, seed=1)), 3))


@pytest.mark.parametrize("start", [1, 2, 3])  # Batch 2 straddles epochs 0 and 1.
def test_batches_straddle_epochs_and_resume_after_a_json_round_trip(start):
  reference = take(iter(rows()), start + 4)
  flat = as_rows(reference)
  want = sorted(row_key(reference_row(r)) for r in RECORDS)
  assert sorted(flat[:10]) == sorted(flat[10:20]) == want
  it = iter(rows())
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))
  take(it, 2)
  fresh = iter(rows())
  fresh.set_state(state)
  assert as_rows(take(fresh, 4)) == as_rows(reference[start:])


def test_a_pair_longer_than_the_row_is_an_error_naming_seq_len():
  with pytest.raises(ValueError, match=r"record 1 .* 10 tokens.*config\.data\.seq_len=9"):
    rows(records=[RECORDS[0], {"source": "x" * 6, "target": "y" * 4}])


def test_grokking_equations_through_the_word_tokenizer(tmp_path):
  """The real path of experiments/grokking: modular_arithmetic/add113_30 built by TFDS, its
  word vocabulary made from the train split, rows "a b =" -> c with the loss on c alone."""
  config = _grokking_config(tmp_path)
  tok = parts.make_tokenizer(config)
  assert tok.vocab_size == 3 + 113 + 1 <= config.model.vocab_size  # Specials, numbers, "=".
  records = sources.from_config(config.data, train=False)
  batch = next(iter(parts.make_dataset(config, train=False, tokenizer=tok)))
  assert batch["inputs"].shape == (config.train.batch_size, 3)
  np.testing.assert_array_equal(
    batch["weights"], np.tile([0.0, 0.0, 1.0], (len(batch["weights"]), 1))
  )
  for i in range(len(batch["inputs"])):
    a, b = map(int, sources.record_text(records[i], "source")[:-1].split())
    assert tok.decode(batch["inputs"][i]) == f"{a} {b} ="
    assert tok.decode(batch["targets"][i][2:]) == str((a + b) % 113)
  # The eval baseline is the answers' entropy (the loss sits on them alone), near ln 113.
  answers = [int(sources.record_text(records[i], "target")) for i in range(len(records))]
  p = np.bincount(answers) / len(answers)
  want = -(p[p > 0] * np.log(p[p > 0])).sum()
  assert pipeline.cached_eval_entropy(config.data, tok) == pytest.approx(want, rel=1e-9)
  assert abs(want - np.log(113)) < 0.01
  train = next(iter(parts.make_dataset(config, train=True, tokenizer=tok)))
  assert len(train["inputs"]) == 3831 == len(sources.from_config(config.data, train=True))
  assert len({tuple(r) for r in train["inputs"]}) == 3831  # The whole training set, once.


def _grokking_config(tmp_path):
  import importlib.util
  import os

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
    "grokking", f"{root}/experiments/grokking/config.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("cpu")
  config.data.data_dir = str(tmp_path / "tfds")
  return config


def test_prompt_response_is_for_the_lm_objective(tmp_path):
  config = _grokking_config(tmp_path)
  config.loss.objective = "mlm"
  with pytest.raises(ValueError, match=r"sampling='prompt_response'.*objective='lm'.*'mlm'"):
    sources.check_config(config)
