"""Tests of jtrans.data: tokenizer, pydoc_topics builder, sources and grain LM pipelines.

The corpus is built once per module into a temporary data_dir; expectations are
computed from ``pydoc_data.topics`` directly (no network, no TensorFlow).
"""

from __future__ import annotations

import json
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from etils import epath

from jtrans.data import pipeline, pydoc_corpus, sources
from jtrans.data.pipeline import make_lm_dataset, unigram_entropy
from jtrans.data.tokenizers import ByteTokenizer, get_tokenizer

EOS = ByteTokenizer.eos_id
TOPICS = pydoc_corpus.load_topics()  # name -> text, sorted by name.
VAL_NAMES = pydoc_corpus.validation_topics(TOPICS)
TRAIN_NAMES = [n for n in TOPICS if n not in set(VAL_NAMES)]
# The topics text ships with CPython; the pinned numbers below are those of 3.11.
PY311 = sys.version_info[:2] == (3, 11)


def doc_ids(text: str) -> np.ndarray:
  """Reference tokenization of one document, EOS appended: int32 [bytes + 1]."""
  return np.array([b + 3 for b in text.encode("utf-8")] + [EOS], np.int32)


def stream(names: list[str]) -> np.ndarray:
  """Reference token stream of the named topics in the given order."""
  return np.concatenate([doc_ids(TOPICS[n]) for n in names])


def lm(data_dir: str, **kwargs) -> grain.IterDataset:
  args = dict(
    name="pydoc_topics",
    split="train",
    data_dir=data_dir,
    tokenizer="byte",
    text_key="text",
    seq_len=64,
    batch_size=8,
    seed=0,
    train=True,
  )
  return make_lm_dataset(**{**args, **kwargs})


def take(iterator, n: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def eval_pieces(batches: list[dict]) -> list[bytes]:
  """Documents (as UTF-8 bytes) of an eval pass, from its weighted targets."""
  targets = np.concatenate(
    [b["targets"].reshape(-1)[b["weights"].reshape(-1) > 0] for b in batches]
  )
  cuts = np.flatnonzero(targets == EOS)
  assert cuts[-1] == len(targets) - 1  # The pass ends with a whole document.
  return [bytes((doc[:-1] - 3).astype(np.uint8)) for doc in np.split(targets, cuts + 1)[:-1]]


def test_byte_tokenizer_round_trip():
  tok = get_tokenizer("byte")
  text = "Grüße, ναί, 日本語 🙂!"
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and tok.vocab_size == 259
  np.testing.assert_array_equal(ids, np.frombuffer(text.encode(), np.uint8).astype(np.int32) + 3)
  assert len(ids) == len(text.encode("utf-8")) == 32
  assert tok.decode(ids) == text
  assert tok.decode(np.concatenate([[0, 2], ids, [1, 0, 0]])) == text  # Specials dropped.
  assert tok.decode(ids[None, :]) == text  # Any shape.
  assert tok.decode([0xC3 + 3, ord("a") + 3]) == "\ufffda"  # Invalid UTF-8 replaced.
  assert tok.encode("").shape == (0,)


def test_unknown_tokenizer_names_the_setting():
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer.*'byte'"):
    get_tokenizer("sentencepiece-nope")


def test_builder_reads_back_without_tensorflow(data_dir):
  val = tfds.data_source(
    "pydoc_topics",
    split="validation",
    data_dir=data_dir,
    download=False,
    builder_kwargs={"file_format": "array_record"},
  )
  names = list(TOPICS)
  assert len(val) == len(VAL_NAMES)
  for i in range(len(val)):
    record = val[i]
    assert record["text"].decode("utf-8") == TOPICS[names[record["index"]]]
  assert "tensorflow" not in sys.modules


def test_splits_disjoint_cover_all_topics(data_dir):
  names = list(TOPICS)
  got = {}
  for split in ("train", "validation"):
    source = sources.load_source("pydoc_topics", split, data_dir)
    got[split] = [names[int(source[i]["index"])] for i in range(len(source))]
  assert got["validation"] == VAL_NAMES and got["train"] == TRAIN_NAMES  # Sorted by index.
  assert not set(got["train"]) & set(got["validation"])
  assert sorted(got["train"] + got["validation"]) == names
  val_chars = sum(len(TOPICS[n]) for n in VAL_NAMES)
  assert 0.09 < val_chars / sum(map(len, TOPICS.values())) <= 0.10


def test_eval_pass_counts_every_token_once(data_dir):
  batches = list(lm(data_dir, split="validation", train=False, seq_len=64, batch_size=4))
  ref = stream(VAL_NAMES)
  assert len(ref) == sum(len(TOPICS[n].encode()) + 1 for n in VAL_NAMES)
  for b in batches:
    assert b["inputs"].shape == b["targets"].shape == b["weights"].shape == (4, 64)
    assert b["inputs"].dtype == b["targets"].dtype == np.int32 and b["weights"].dtype == np.float32
  inputs, targets, weights = (
    np.concatenate([b[k] for b in batches]).reshape(-1) for k in ("inputs", "targets", "weights")
  )
  assert weights.sum() == len(ref)
  real = int(weights.sum())
  np.testing.assert_array_equal(weights[:real], 1)  # Padding only at the very end...
  np.testing.assert_array_equal(weights[real:], 0)
  np.testing.assert_array_equal(targets[real:], 0)  # ...and it is pad tokens.
  np.testing.assert_array_equal(targets[:real], ref)  # Every token predicted exactly once...
  np.testing.assert_array_equal(
    inputs[:real], np.concatenate([[EOS], ref[:-1]])
  )  # ...from its predecessor.
  assert len(batches) == -(-len(ref) // (4 * 64))
  tok = get_tokenizer("byte")
  first = TOPICS[VAL_NAMES[0]].encode()
  assert tok.decode(batches[0]["targets"][:2]) == first[:128].decode()
  assert tok.decode(batches[0]["inputs"][0]) == first[:63].decode()
  rows = (
    np.concatenate([b["targets"] for b in batches]),
    np.concatenate([b["inputs"] for b in batches]),
  )
  np.testing.assert_array_equal(rows[1][1:, 0], rows[0][:-1, -1])  # Rows overlap by one token.


def test_train_rows_come_from_train_documents(data_dir):
  docs = {TOPICS[n].encode() for n in TRAIN_NAMES}
  batches = take(iter(lm(data_dir, seq_len=1024, batch_size=4)), 40)
  whole = 0
  for b in batches:
    assert b["targets"].shape == (4, 1024)
    np.testing.assert_array_equal(b["weights"], 1)
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
    for row in b["targets"]:
      pieces = [bytes((p - 3).astype(np.uint8)) for p in np.split(row, np.flatnonzero(row == EOS))]
      pieces = [pieces[0]] + [p[1:] for p in pieces[1:]]  # Drop the EOS that starts a piece.
      if len(pieces) == 1:
        assert any(pieces[0] in d for d in docs)
        continue
      assert any(d.endswith(pieces[0]) for d in docs)
      assert any(d.startswith(pieces[-1]) for d in docs)
      whole += sum(p in docs for p in pieces[1:-1])
      assert all(p in docs for p in pieces[1:-1])
  assert whole > 0  # Some short topics fit inside one row.


def test_train_is_seeded_and_changes_every_epoch(data_dir):
  a = take(iter(lm(data_dir, seed=0)), 20)
  assert_same_batches(a, take(iter(lm(data_dir, seed=0)), 20))
  b = take(iter(lm(data_dir, seed=1)), 20)
  assert not np.array_equal(a[0]["targets"], b[0]["targets"])
  for seed, batches in (
    (0, a),
    (1, b),
  ):  # Epoch 0 starts at a seeded offset into its first document.
    skip = int(np.random.default_rng([seed, 0]).integers(64))
    first = bytes((batches[0]["targets"][0] - 3).astype(np.uint8))
    assert skip > 0 and any(TOPICS[n].encode()[skip : skip + 64] == first for n in TRAIN_NAMES)
  # Two epochs (train stream / (64 * 8) = ~818 batches each): windows barely repeat.
  rows = np.concatenate([x["targets"] for x in take(iter(lm(data_dir)), 1640)])
  assert len(rows) > 2 * len(stream(TRAIN_NAMES)) / 64 - 16
  assert len({r.tobytes() for r in rows}) > 0.98 * len(rows)


def epoch_end_batch(seq_len: int, batch_size: int) -> int:
  """Index of the batch holding the end of epoch 0 (start offset < seq_len tokens)."""
  return (len(stream(TRAIN_NAMES)) - 1) // (seq_len * batch_size)


@pytest.mark.parametrize("window", [0, 256])
@pytest.mark.parametrize("where", ["mid_epoch", "epoch_boundary"])
def test_resume_with_get_state(data_dir, where, window):
  start = 7 if where == "mid_epoch" else epoch_end_batch(64, 8) - 2
  reference = take(iter(lm(data_dir, shuffle_window=window)), start + 6)
  it = iter(lm(data_dir, shuffle_window=window))
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))  # As Orbax stores it.
  take(it, 3)  # Moving on does not change what the saved state restores.
  fresh = iter(lm(data_dir, shuffle_window=window))
  fresh.set_state(state)
  assert_same_batches(take(fresh, 6), reference[start:])


@pytest.mark.parametrize("window", [0, 256])
def test_resume_with_orbax_checkpoint(data_dir, tmp_path, window):
  start = epoch_end_batch(64, 8) - 1
  reference = take(iter(lm(data_dir, shuffle_window=window)), start + 4)
  it = iter(lm(data_dir, shuffle_window=window))
  take(it, start)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(
      start,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave({"step": np.array(start)}),
        data=grain.checkpoint.CheckpointSave(it),
      ),
    )
    mngr.wait_until_finished()
  fresh = iter(lm(data_dir, shuffle_window=window))
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    assert mngr.latest_step() == start
    restored = mngr.restore(
      start,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore({"step": np.array(0)}),
        data=grain.checkpoint.CheckpointRestore(fresh),
      ),
    )
  assert int(restored["state"]["step"]) == start
  assert_same_batches(take(fresh, 4), reference[start:])


def test_shards_are_disjoint_and_cover(data_dir):
  texts = [TOPICS[n].encode() for n in VAL_NAMES]
  seen, lengths = [], []
  for shard in range(3):
    ds = lm(
      data_dir, split="validation", train=False, batch_size=2, shard_index=shard, shard_count=3
    )
    batches = list(ds)
    pieces = eval_pieces(batches)
    assert pieces == texts[shard::3]
    seen += pieces
    tokens = sum(len(t) + 1 for t in pieces)
    assert sum(b["weights"].sum() for b in batches) == tokens
    own = -(-tokens // 64)  # Rows of this shard (two per batch).
    assert all(not b["weights"].any() for b in batches[(own + 1) // 2 :])
    lengths.append(len(batches))
    it = iter(ds)  # Resuming inside the padding gives the same tail.
    take(it, len(batches) - 2)
    fresh = iter(
      lm(data_dir, split="validation", train=False, batch_size=2, shard_index=shard, shard_count=3)
    )
    fresh.set_state(it.get_state())
    assert_same_batches(list(fresh), batches[-2:])
  assert sorted(seen) == sorted(texts)
  assert len(set(lengths)) == 1  # Shards yield equally many batches (padded), for lock step.
  up = lambda a, b: -(-a // b)  # Ceiling division.
  assert lengths[0] == max(up(up(sum(len(t) + 1 for t in texts[s::3]), 64), 2) for s in range(3))
  train_docs = [{TOPICS[n].encode() for n in TRAIN_NAMES[s::2]} for s in range(2)]
  for shard in range(2):  # Whole documents inside training rows come from the own shard.
    ds = lm(data_dir, seq_len=512, batch_size=4, shard_index=shard, shard_count=2)
    for b in take(iter(ds), 40):
      for row in b["targets"]:
        for p in np.split(row, np.flatnonzero(row == EOS))[1:-1]:
          piece = bytes((p[1:] - 3).astype(np.uint8))
          assert piece in train_docs[shard] and piece not in train_docs[1 - shard]


def test_unprepared_tfds_dataset_names_the_build_command(tmp_path):
  data_dir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError) as e:
    lm(data_dir, name="lm1b")
  assert isinstance(e.value, sources.DatasetNotPreparedError)
  message = str(e.value)
  assert "'lm1b'" in message and data_dir in message
  assert f"tfds build lm1b --data_dir={data_dir} --file_format=array_record" in message
  with pytest.raises(ValueError, match=r"'no_such_data_set' \(config\.data\.name\)"):
    sources.load_source("no_such_data_set", "train", data_dir)


def test_unigram_entropy_matches_numpy(data_dir):
  for names, split in ((VAL_NAMES, "validation"), (TRAIN_NAMES, "train")):
    raw = b"".join(TOPICS[n].encode() for n in names)
    _, counts = np.unique(np.frombuffer(raw, np.uint8), return_counts=True)
    counts = np.append(counts, len(names))  # One EOS per document.
    p = counts / counts.sum()
    expected = -np.sum(p * np.log(p))
    got = unigram_entropy(
      name="pydoc_topics", split=split, data_dir=data_dir, tokenizer="byte", text_key="text"
    )
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.skipif(
  not PY311,
  reason="the corpus ships with CPython; these are 3.11's numbers "
  "(the README's and configs/lm.py's); the tests above check any version",
)
def test_the_numbers_the_readme_quotes_for_python_311(data_dir):
  assert len(TOPICS) == 79 and len(VAL_NAMES) == 20
  assert len(stream(VAL_NAMES)) == 46_505
  got = unigram_entropy(
    name="pydoc_topics", split="validation", data_dir=data_dir, tokenizer="byte", text_key="text"
  )
  assert got == pytest.approx(3.2528, abs=1e-4)


def test_the_eval_entropy_is_computed_once_and_cached_beside_the_data(data_dir):
  from configs import base

  data = base.get_config().data
  data.data_dir = data_dir
  want = unigram_entropy(
    name="pydoc_topics", split="validation", data_dir=data_dir, tokenizer="byte", text_key="text"
  )
  tok = get_tokenizer("byte")
  root = epath.Path(data_dir) / "jtrans_cache"
  before = set(root.glob("entropy-*.json")) if root.exists() else set()
  assert pipeline.cached_eval_entropy(data, tok) == want
  # Other tests' data sets share the session's data_dir: this split's file is the new one, or
  # the one that holds this entropy already.
  cached = [
    p for p in root.glob("entropy-*.json") if p not in before or repr(want) in p.read_text()
  ]
  assert len(cached) == 1
  cached[0].write_text(cached[0].read_text().replace(repr(want), "1.25"))  # Read, not recomputed.
  assert pipeline.cached_eval_entropy(data, tok) == 1.25
  cached[0].unlink()  # The session's data_dir is shared: leave no altered value behind.


def windows(data_dir: str, seed: int = 0) -> grain.IterDataset:
  source = sources.load_source("pydoc_topics", "train", data_dir)
  return pipeline.make_window_dataset(
    source=source, tokenizer="byte", text_key="text", seq_len=64, batch_size=8, seed=seed
  )


def find_window(haystack: np.ndarray, needle: np.ndarray) -> int | None:
  """The first index where int32 `needle` occurs in `haystack` (byte search, aligned)."""
  data, pattern, at = haystack.tobytes(), needle.tobytes(), -1
  while (at := data.find(pattern, at + 1)) >= 0:
    if at % 4 == 0:
      return at // 4
  return None


def test_random_windows_are_nanogpts_get_batch(data_dir):
  """data.sampling="windows": every row is a contiguous window of the train stream (all
  documents in stored order, each followed by EOS) at a seeded start, targets the inputs
  shifted by one; starts spread over the whole stream from the first batches on (the packed
  stream starts at its beginning); seeded; a restored state continues the same batches."""
  reference = stream(TRAIN_NAMES)
  batches = take(iter(windows(data_dir)), 20)
  starts = []
  for batch in batches:
    assert (batch["weights"] == 1).all()
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    for row, targets in zip(batch["inputs"], batch["targets"]):
      start = find_window(reference, np.concatenate([row, targets[-1:]]))
      assert start is not None, row
      starts.append(start)
  # 160 starts, uniform over the stream: every tenth of it is visited.
  assert len(set(np.array(starts) * 10 // len(reference))) == 10, starts
  assert_same_batches(take(iter(windows(data_dir)), 3), batches[:3])
  assert not np.array_equal(
    take(iter(windows(data_dir, seed=1)), 1)[0]["inputs"], batches[0]["inputs"]
  )
  it = iter(windows(data_dir))
  take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  fresh = iter(windows(data_dir))
  fresh.set_state(state)
  assert_same_batches(take(fresh, 4), batches[5:9])
