"""grain pipelines for language modelling: documents -> packed next-token batches.

Token stream: each document is tokenized and followed by EOS; the documents are
concatenated and cut into rows of ``seq_len`` predicted tokens. A row is a window
of ``seq_len + 1`` stream tokens: ``inputs = window[:-1]``, ``targets = window[1:]``,
and consecutive windows overlap by one token, so every stream token is a target
exactly once (the first document is predicted from a leading EOS, the same context
every other document gets from the EOS before it).

This is done with grain's ``ConcatThenSplitIterDataset`` on two aligned features
per document, ``inputs = [EOS] + ids`` and ``targets = ids + [EOS]``: both have the
same length, so they are cut at the same points, and a packed ``inputs`` row is
exactly the ``targets`` row shifted right by one stream token.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from tensorflow_datasets.core import constants

from jtrans import storage
from jtrans.data import chat, sources
from jtrans.data.iterators import JsonState, PadToCount, ceil_div, check_shard
from jtrans.data.tokenizers import Tokenizer, get_tokenizer

Batch = dict[str, np.ndarray]


class _ToExample:
  """Record -> ``{'inputs': [EOS] + ids, 'targets': ids + [EOS]}``, int32 [len(ids) + 1]."""

  def __init__(self, tokenizer: Tokenizer, text_key: str):
    self.tokenizer, self.text_key = tokenizer, text_key

  def __call__(self, record: dict[str, Any]) -> Batch:
    ids = self.tokenizer.encode(sources.record_text(record, self.text_key))
    eos = np.array([self.tokenizer.eos_id], np.int32)
    return {"inputs": np.concatenate([eos, ids]), "targets": np.concatenate([ids, eos])}


class _EpochOffset:
  """Drops a seeded random number (< seq_len) of leading tokens of each epoch's first document.

  Applied with ``map_with_index`` after ``repeat``: index ``i`` is in epoch
  ``i // docs_per_epoch``, so the cut points of every epoch shift by a fresh,
  deterministic amount, and the state stays a plain position in the stream.
  """

  def __init__(self, docs_per_epoch: int, seq_len: int, seed: int):
    self.docs_per_epoch, self.seq_len, self.seed = docs_per_epoch, seq_len, seed

  def __call__(self, index: int, example: Batch) -> Batch:
    epoch, position = divmod(index, self.docs_per_epoch)
    if position != 0:
      return example
    skip = int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
    return {k: v[skip:] for k, v in example.items()}


def _to_batch_row(packed: Batch, segments: bool = False) -> Batch:
  """Packed row -> ``inputs``/``targets`` int32 [seq_len], ``weights`` float32 [seq_len].

  With ``segments``, also ``segment_ids`` (1, 2, ... per document piece in the row, 0 on
  padding) and ``positions`` (restarting at 0 for each piece), so that attention never
  crosses documents and positions restart per document.
  """
  row = {
    "inputs": packed["inputs"],
    "targets": packed["targets"],
    "weights": (packed["targets_segment_ids"] > 0).astype(np.float32),
  }
  if segments:
    row["segment_ids"] = packed["inputs_segment_ids"]
    row["positions"] = packed["inputs_positions"]
  return row


def _eval_batch_count(
  docs: grain.MapDataset, shard_count: int, seq_len: int, batch_size: int
) -> int:
  """Most eval batches any shard yields: ceil(ceil(tokens / seq_len) / batch_size)."""
  counts = []
  for shard in range(shard_count):
    tokens = sum(len(docs[i]["targets"]) for i in range(shard, len(docs), shard_count))
    counts.append(ceil_div(ceil_div(tokens, seq_len), batch_size))
  return max(counts)


def _source(
  source: Sequence[dict[str, Any]] | None, name: str, split: str, data_dir: str | None
) -> Sequence[dict[str, Any]]:
  return sources.load_source(name, split, data_dir) if source is None else source


def _tokenizer(tokenizer: str | Tokenizer) -> Tokenizer:
  return get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer


def make_lm_dataset(
  *,
  name: str = "",
  split: str = "",
  data_dir: str | None = None,
  source: Sequence[dict[str, Any]] | None = None,
  tokenizer: str | Tokenizer,
  text_key: str,
  seq_len: int,
  batch_size: int,
  seed: int,
  train: bool,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  shuffle_window: int = 0,
  segment_ids: bool = False,
) -> grain.IterDataset:
  """Returns a grain dataset of next-token prediction batches.

  Documents come from ``source`` (records with a ``text_key`` field, e.g. from
  ``sources.from_config``) or, without it, from TFDS data set ``name``'s ``split``.
  ``tokenizer`` is a ``Tokenizer`` or a name for ``get_tokenizer``.

  Each element is ``{'inputs': int32 [batch_size, seq_len], 'targets': int32
  [batch_size, seq_len], 'weights': float32 [batch_size, seq_len]}`` where
  ``batch_size`` is this process's share of the global batch and weights are 0
  exactly on padding. Process ``shard_index`` of ``shard_count`` reads documents
  ``shard_index::shard_count`` of the (index-sorted) split.

  train=True: documents are shuffled with ``seed`` (a new order every epoch),
  each epoch's stream starts at a seeded offset in ``[0, seq_len)``, the stream
  repeats forever, packed rows are shuffled within windows of ``shuffle_window`` rows
  (so that a batch mixes many documents instead of being consecutive rows of one), and
  ``worker_count > 0`` moves the work into grain worker processes (each packs its own
  slice of the documents, so the stream differs from worker_count=0 and a saved state
  only fits the same worker_count).
  train=False: one in-process pass in stored order; the last rows
  and batch are padded (weight 0) so every token is counted once and shapes stay
  fixed, and with ``shard_count > 1`` every shard is padded with all-zero-weight
  batches to the same number of batches (counting it tokenizes the whole split).

  ``segment_ids=True`` adds ``segment_ids`` and ``positions`` (int32 [batch_size, seq_len])
  so that the model masks attention between the documents packed into a row.

  ``iter(ds)`` supports ``get_state()``/``set_state()`` and
  ``grain.checkpoint.CheckpointSave``/``CheckpointRestore``; a restored iterator
  continues with exactly the batches of the uninterrupted one.
  """
  check_shard(shard_index, shard_count)
  tok = _tokenizer(tokenizer)
  all_examples = grain.MapDataset.source(_source(source, name, split, data_dir))
  all_examples = all_examples.map(_ToExample(tok, text_key))
  examples = all_examples[shard_index::shard_count]
  if len(examples) == 0:
    raise ValueError(
      f"shard {shard_index} of {shard_count} of {name or 'the data set'}:"
      f"{split or 'its split'} has no documents: the split has {len(all_examples)}, "
      "fewer than the processes; use a larger split or fewer processes."
    )
  if train:
    n = len(examples)
    examples = examples.shuffle(seed=seed).repeat(None)
    examples = examples.map_with_index(_EpochOffset(n, seq_len, seed))
  packed = grain.experimental.ConcatThenSplitIterDataset(
    examples.to_iter_dataset(),
    length_struct={"inputs": seq_len, "targets": seq_len},
  )
  rows = packed.map(functools.partial(_to_batch_row, segments=segment_ids))
  if train and shuffle_window > 1:
    rows = grain.experimental.WindowShuffleIterDataset(rows, window_size=shuffle_window, seed=seed)
  if not train:
    pad = functools.partial(grain.experimental.batch_and_pad, batch_size=batch_size)
    batches = rows.batch(batch_size, batch_fn=pad)
    if shard_count == 1:
      return batches
    shape = (batch_size, seq_len)
    pad_batch = {
      "inputs": np.zeros(shape, np.int32),
      "targets": np.zeros(shape, np.int32),
      "weights": np.zeros(shape, np.float32),
    }
    if segment_ids:
      pad_batch |= {
        "segment_ids": np.zeros(shape, np.int32),
        "positions": np.zeros(shape, np.int32),
      }
    count = _eval_batch_count(all_examples, shard_count, seq_len, batch_size)
    return PadToCount(batches, count, pad_batch)
  batches = rows.batch(batch_size, drop_remainder=True)
  if worker_count > 0:
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return JsonState(batches)


class _RandomWindows:
  """Batch ``index`` -> ``rows`` windows of ``seq_len + 1`` stream tokens at seeded random
  starts (drawn for the whole batch at once: per-row draws cost more than the step here)."""

  def __init__(self, stream: np.ndarray, seq_len: int, rows: int, seed: int):
    self.stream, self.seq_len, self.rows, self.seed = stream, seq_len, rows, seed
    self.starts = len(stream) - seq_len  # Starts whose window fits in the stream.

  def __call__(self, index: int, _: Any) -> Batch:
    starts = np.random.default_rng([self.seed, index]).integers(self.starts, size=self.rows)
    windows = self.stream[starts[:, None] + np.arange(self.seq_len + 1)]
    return {
      "inputs": windows[:, :-1],
      "targets": windows[:, 1:],
      "weights": np.ones((self.rows, self.seq_len), np.float32),
    }


def make_window_dataset(
  *,
  source: Sequence[dict[str, Any]],
  tokenizer: str | Tokenizer,
  text_key: str,
  seq_len: int,
  batch_size: int,
  seed: int,
  worker_count: int = 0,
) -> grain.IterDataset:
  """Training batches of windows drawn uniformly from the whole split's token stream.

  nanoGPT's ``get_batch``: every row starts at a random position of the concatenated
  documents (each followed by EOS), drawn independently from ``seed`` and the batch's index,
  so every batch is an i.i.d. sample of the text. The packed stream of
  ``make_lm_dataset`` instead walks the text in order (shuffled within a window of rows),
  which on a corpus of one long document (Tiny Shakespeare) feeds one stretch of it at a
  time. The stream is held in memory as int32 (4 bytes a token). Elements are
  ``make_lm_dataset``'s; the iterator state is the batch count.
  """
  tok = _tokenizer(tokenizer)
  pieces = []
  for record in source:
    pieces += [tok.encode(sources.record_text(record, text_key)), [tok.eos_id]]
  stream = np.concatenate([np.asarray(p, np.int32) for p in pieces])
  if len(stream) <= seq_len:
    raise ValueError(
      f"the training split has {len(stream)} tokens, no more than config.data.seq_len="
      f"{seq_len}: random windows need a longer split or a shorter seq_len."
    )
  draw = _RandomWindows(stream, seq_len, batch_size, seed)
  batches = grain.MapDataset.range(2**62).map_with_index(draw).to_iter_dataset()
  if worker_count > 0:
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return JsonState(batches)


def unigram_entropy(
  *,
  name: str = "",
  split: str = "",
  data_dir: str | None = None,
  source: Sequence[dict[str, Any]] | None = None,
  tokenizer: str | Tokenizer,
  text_key: str,
  eos: bool = True,
) -> float:
  """Entropy (nats) of the token unigram distribution of ``split``: documents plus one EOS each
  (none without ``eos``).

  The loss of the best context-free model: a baseline for the validation loss. The
  documents come from ``source`` or, without it, TFDS data set ``name``'s ``split``.
  """
  tok = _tokenizer(tokenizer)
  source = _source(source, name, split, data_dir)
  counts = np.zeros(tok.vocab_size, np.int64)
  for i in range(len(source)):
    counts += np.bincount(
      tok.encode(sources.record_text(source[i], text_key)), minlength=tok.vocab_size
    )
  counts[tok.eos_id] += len(source) * eos
  return entropy_of_counts(counts)


def entropy_of_counts(counts: np.ndarray) -> float:
  """Entropy (nats) of the distribution that token counts [vocab] give."""
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def cached_eval_entropy(
  data: ml_collections.ConfigDict, tokenizer: Tokenizer, fmt: chat.Format | None = None
) -> float:
  """`unigram_entropy` of ``config.data``'s eval split, cached beside a TFDS data set
  (``<data_dir>/jtrans_cache/``) so that a run computes it once, not at every start.

  The user's own files (``data.name="files"``) may change between runs and are recomputed.
  With ``sampling="prompt_response"`` the loss is on the responses alone, so theirs is the
  entropy (grokking's answers mod 113: ln 113 = 4.73 nats); with ``sampling="chat"``, that of
  the assistant's tokens (`fmt`: the run's chat format, else config.data's is built).
  """
  responses = data.sampling == "prompt_response"
  text_key = data.target_key if responses else data.text_key
  eos = data.response_eos or not responses
  compute = lambda: unigram_entropy(
    source=sources.from_config(data, train=False), tokenizer=tokenizer, text_key=text_key, eos=eos
  )
  if data.sampling == "chat":
    compute = lambda: entropy_of_counts(
      chat.assistant_counts(
        sources.from_config(data, train=False),
        fmt or chat.make_format(data, tokenizer),
        (data.messages_key, data.source_key, data.target_key),
      )
    )
  if data.name == sources.FILES:
    return compute()
  chat_keys = [data.messages_key, data.chat_template] if data.sampling == "chat" else []
  key = json.dumps(
    [
      *chat_keys,
      data.name,
      data.eval_split,
      text_key,
      eos,
      data.tokenizer,
      data.tokenizer_path,
      data.tokenizer_vocab_size,
      tokenizer.vocab_size,
    ]
  )
  root = storage.path(data.data_dir or constants.get_default_data_dir()) / "jtrans_cache"
  path = root / f"entropy-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
  if path.exists():
    return json.loads(path.read_text())["entropy"]
  entropy = compute()
  storage.write_text(path, json.dumps({"key": key, "entropy": entropy}))  # Whole, never half.
  return entropy
