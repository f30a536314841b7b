"""grain pipeline for sequence-to-sequence pairs: (source text, target text) -> encoder-decoder batches.

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

from jtrans.data.iterators import Batch, record_batches
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
