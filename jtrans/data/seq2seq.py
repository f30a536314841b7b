"""grain pipelines for (source text, target text) pairs: encoder-decoder batches, and decoder-only
prompt -> response rows with loss on the response alone.

One pair per row, no packing. Both sides get EOS; a side longer than its row keeps
its first ``len - 1`` ids and still ends in EOS (so the model always learns to stop).
The decoder reads the target shifted right by one, starting from the decoder start
id, which is ``pad_id`` (T5's convention): row ``inputs = [pad_id] + targets[:-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jtrans.data.iterators import Batch, JsonState, record_batches
from jtrans.data.sources import record_text
from jtrans.data.tokenizers import Tokenizer


def _ids_eos_padded(tok: Tokenizer, text: str, length: int) -> tuple[np.ndarray, int]:
  """(int32 [length] ids + EOS, truncated and padded with pad_id; the number of real ids)."""
  ids = tok.encode(text)[: length - 1]
  n = len(ids) + 1
  row = np.full(length, tok.pad_id, np.int32)
  row[: n - 1], row[n - 1] = ids, tok.eos_id
  return row, n


class _ToPair:
  """Record -> one row of a seq2seq batch (see ``make_seq2seq_dataset``)."""

  def __init__(
    self, tokenizer: Tokenizer, source_key: str, target_key: str, source_len: int, seq_len: int
  ):
    self.tok, self.keys, self.source_len, self.seq_len = (
      tokenizer,
      (source_key, target_key),
      source_len,
      seq_len,
    )

  def __call__(self, record: dict[str, Any]) -> Batch:
    source_text = record_text(record, self.keys[0], "source_key")
    target_text = record_text(record, self.keys[1], "target_key")
    source, n_source = _ids_eos_padded(self.tok, source_text, self.source_len)
    targets, n_target = _ids_eos_padded(self.tok, target_text, self.seq_len)
    inputs = np.concatenate([[self.tok.pad_id], targets[:-1]]).astype(np.int32)
    return {
      "encoder_inputs": source,
      "encoder_mask": (np.arange(self.source_len) < n_source).astype(np.float32),
      "inputs": inputs,
      "targets": targets,
      "weights": (np.arange(self.seq_len) < n_target).astype(np.float32),
    }


def make_seq2seq_dataset(
  *,
  source: Sequence[dict[str, Any]],
  tokenizer: Tokenizer,
  source_key: str,
  target_key: str,
  source_len: int,
  seq_len: int,
  batch_size: int,
  seed: int,
  train: bool,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
) -> grain.IterDataset:
  """Returns a grain dataset of encoder-decoder batches of the pairs in ``source``.

  Each element (B = ``batch_size``, this process's share of the global batch):
    ``encoder_inputs`` int32 [B, source_len]: source ids + EOS, then pad_id;
    ``encoder_mask`` float32 [B, source_len]: 1 on source ids and its EOS, else 0;
    ``inputs`` int32 [B, seq_len]: decoder inputs, pad_id (the start id) + targets[:-1];
    ``targets`` int32 [B, seq_len]: target ids + EOS, then pad_id;
    ``weights`` float32 [B, seq_len]: 1 on target ids and its EOS, else 0.
  Texts are the records' ``source_key`` and ``target_key`` fields. Shuffling, shards,
  eval padding (all-zero rows, weight 0; equally many batches on every shard) and
  resumable state are those of ``iterators.record_batches``.
  """
  if source_len < 1 or seq_len < 1:
    raise ValueError(
      f"source_len={source_len} and seq_len={seq_len} must be positive "
      "(config.data.source_len, config.data.seq_len)."
    )
  return record_batches(
    source,
    _ToPair(tokenizer, source_key, target_key, source_len, seq_len),
    batch_size=batch_size,
    seed=seed,
    train=train,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=worker_count,
  )


class _PromptResponseRows:
  """Every (prompt, response) record of a split, tokenized once and held in memory, and the
  vectorized gather of any set of them into a batch (see ``make_prompt_response_dataset``).

  A row stream is ``prompt + response (+ [EOS])``; ``streams`` holds them padded,
  [records, seq_len + 1] (uint16 when the vocabulary fits, else int32), with each stream's
  length and its prompt's. Per-record grain elements cost more than a small model's step on a
  full batch of thousands of short rows (grokking), hence whole batches at once.
  """

  def __init__(self, source, tokenizer: Tokenizer, keys: tuple[str, str], seq_len: int, eos: bool):
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.int32
    self.streams = np.full((len(source), seq_len + 1), tokenizer.pad_id, dtype)
    self.lengths = np.zeros(len(source), np.int32)
    self.prompt_lengths = np.zeros(len(source), np.int32)
    for i, record in enumerate(source):
      prompt = tokenizer.encode(record_text(record, keys[0], "source_key"))
      response = tokenizer.encode(record_text(record, keys[1], "target_key"))
      end = [tokenizer.eos_id] if eos else []
      # As --mode=generate feeds a decoder: the prompt as it is, EOS only for an empty one.
      start = prompt if len(prompt) else [tokenizer.eos_id]
      stream = np.concatenate([start, response, end]).astype(np.int32)
      if len(stream) - 1 > seq_len:
        raise ValueError(
          f"record {i} is a prompt and response of {len(stream) - 1} tokens, which do not fit "
          f"config.data.seq_len={seq_len}; raise it (and config.model.max_len)."
        )
      self.streams[i, : len(stream)] = stream
      self.lengths[i], self.prompt_lengths[i] = len(stream), len(start)
    self.pad_id, self.seq_len = tokenizer.pad_id, seq_len

  def __len__(self) -> int:
    return len(self.lengths)

  def gather(self, indices: np.ndarray) -> Batch:
    """Rows ``indices`` ([B]; -1 = an all-padding row of weight 0) as a batch."""
    real = indices >= 0
    streams = self.streams[np.where(real, indices, 0)].astype(np.int32)
    streams[~real] = self.pad_id
    lengths = np.where(real, self.lengths[indices], 0)[:, None]
    position = np.arange(self.seq_len)[None, :]
    in_stream = position < lengths - 1  # Whose target (the next stream token) exists.
    response = position >= self.prompt_lengths[indices][:, None] - 1
    return {
      "inputs": np.where(in_stream, streams[:, :-1], self.pad_id),
      "targets": np.where(in_stream, streams[:, 1:], self.pad_id),
      "weights": (in_stream & response & real[:, None]).astype(np.float32),
    }


class _EpochBatch:
  """Training batch ``index`` -> the rows at stream positions ``[index * B, (index + 1) * B)``
  of the records visited epoch after epoch, each epoch in a fresh seeded order."""

  def __init__(self, rows: _PromptResponseRows, batch_size: int, seed: int):
    self.rows, self.batch_size, self.seed = rows, batch_size, seed
    self._last = (-1, np.empty(0, np.int64))  # (epoch, its order): one tuple, swapped whole.

  def _order(self, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s seeded permutation of the records, drawn once per epoch rather than once
    per batch (a split of a million records would otherwise pay for a full shuffle each step)."""
    last_epoch, order = self._last  # Read once: grain may call from several threads.
    if last_epoch != epoch:
      order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
      self._last = (epoch, order)
    return order

  def __call__(self, index: int, _: Any) -> Batch:
    position = index * self.batch_size + np.arange(self.batch_size)
    epochs, offsets = np.divmod(position, len(self.rows))
    indices = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      indices[epochs == epoch] = self._order(int(epoch))[offsets[epochs == epoch]]
    return self.rows.gather(indices)


def make_prompt_response_dataset(
  *,
  source: Sequence[dict[str, Any]],
  tokenizer: Tokenizer,
  source_key: str,
  target_key: str,
  seq_len: int,
  batch_size: int,
  seed: int,
  train: bool,
  response_eos: bool = True,
  worker_count: int = 0,
) -> grain.IterDataset:
  """Returns a grain dataset of next-token batches, one (prompt, response) record per row,
  with loss on the response alone (answer-only loss: grokking, prompt -> response tuning).

  A row is the stream ``prompt + response (+ [EOS] with response_eos)``, as --mode=generate
  feeds a prompt (an empty one is ``[EOS]``):
    ``inputs`` int32 [B, seq_len]: the stream but its last token, then pad_id;
    ``targets`` int32 [B, seq_len]: the stream from its second token, then pad_id;
    ``weights`` float32 [B, seq_len]: 1 where the target is a response token (or its EOS),
    0 on the prompt and padding.
  Prompts come from the records' ``source_key``, responses from ``target_key``; a pair longer
  than ``seq_len`` is an error that names the setting (truncating would cut the answer). The
  split is tokenized once, at the start, and held in memory (2 or 4 bytes a token).

  train=True: the records in a seeded order, a fresh one every epoch, cut into batches that
  may straddle epochs (batch_size = the split's size gives full-batch training); the state is
  the batch count, so a restored iterator continues exactly. train=False: one pass in stored
  order, the last batch padded with rows of weight 0.
  """
  if seq_len < 1:
    raise ValueError(f"config.data.seq_len={seq_len} must be positive.")
  rows = _PromptResponseRows(source, tokenizer, (source_key, target_key), seq_len, response_eos)
  if not train:
    count = -(-len(rows) // batch_size)
    blocks = np.arange(count * batch_size).reshape(count, batch_size)
    blocks[blocks >= len(rows)] = -1
    return grain.MapDataset.source(blocks).map(rows.gather).to_iter_dataset()
  batches = grain.MapDataset.range(2**62).map_with_index(_EpochBatch(rows, batch_size, seed))
  batches = batches.to_iter_dataset()
  if worker_count > 0:
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return JsonState(batches)
