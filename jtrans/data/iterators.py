"""grain building blocks shared by the pipelines: JSON-safe state, equal eval counts, record batches.

``record_batches`` is the whole pipeline for data that is batched record by record
(no packing): sequence-to-sequence pairs and images. The LM pipeline packs documents
into rows instead but shares ``JsonState`` and ``PadToCount``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

Batch = dict[str, np.ndarray]


def _lists_to_tuples(state: Any) -> Any:
  if isinstance(state, dict):
    return {k: _lists_to_tuples(v) for k, v in state.items()}
  if isinstance(state, (list, tuple)):
    return tuple(_lists_to_tuples(v) for v in state)
  return state


class _JsonStateIterator(grain.DatasetIterator):
  """Restores a state that went through JSON (as Orbax stores it) exactly.

  grain 0.2.18's ConcatThenSplit compares its saved slices with the tuple (-1, -1); JSON
  gives back lists, so a restored iterator would think it holds a half-used document.
  """

  def __next__(self) -> Batch:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(_lists_to_tuples(state))


class JsonState(grain.IterDataset):
  """The parent dataset, whose iterators accept states that went through JSON."""

  def __iter__(self) -> grain.DatasetIterator:
    return _JsonStateIterator(self._parent.__iter__())


class PadToCount(grain.IterDataset):
  """Yields the parent's batches, then all-padding batches, ``count`` batches in all.

  Every eval shard yields the same number of batches this way, so processes that
  evaluate in lock step (a collective per batch) finish together.
  """

  def __init__(self, parent: grain.IterDataset, count: int, pad: Batch):
    super().__init__(parent)
    self.count, self.pad = count, pad

  def __iter__(self) -> grain.DatasetIterator:
    return _PadToCountIterator(self._parent.__iter__(), self.count, self.pad)


class _PadToCountIterator(grain.DatasetIterator):
  """Iterator of ``PadToCount``; its state is the parent's plus the batches yielded."""

  def __init__(self, parent: grain.DatasetIterator, count: int, pad: Batch):
    super().__init__(parent)
    self._count, self._pad, self._yielded, self._exhausted = count, pad, 0, False

  def __next__(self) -> Batch:
    if self._yielded >= self._count:
      raise StopIteration
    batch = {k: v.copy() for k, v in self._pad.items()}
    if not self._exhausted:
      try:
        batch = next(self._parent)
      except StopIteration:
        self._exhausted = True
    self._yielded += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {
      "parent": self._parent.get_state(),
      "yielded": self._yielded,
      "exhausted": self._exhausted,
    }

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._yielded, self._exhausted = state["yielded"], state["exhausted"]


# Record-level sources at most this long are kept in memory once read: a small data set (the
# digits: 1,438 images) is read every epoch, and decoding a TFDS record costs ~0.2 ms.
MEMOIZE_RECORDS = 50_000


class Memoized(Sequence):
  """`source[i]`, read once: later reads return the kept record (records are not modified)."""

  def __init__(self, source: Sequence[Any]):
    self._source = source
    self._records: list[Any] = [None] * len(source)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, i: int) -> Any:
    if self._records[i] is None:
      self._records[i] = self._source[i]
    return self._records[i]

  def __repr__(self) -> str:
    return f"Memoized({self._source!r})"


def ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def check_shard(shard_index: int, shard_count: int) -> None:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"Need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}.")


def record_batches(
  source: Sequence[dict[str, Any]],
  to_example: Callable[[dict[str, Any]], Batch],
  *,
  augment: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]] | None = None,
  mix: Callable[[Batch, np.random.Generator], Batch] | None = None,
  batch_size: int,
  seed: int,
  train: bool,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
) -> grain.IterDataset:
  """Batches of ``to_example(record)``, stacked: each feature gains a leading [batch_size] axis.

  Process ``shard_index`` of ``shard_count`` reads records ``shard_index::shard_count``.
  train=True: a seeded shuffle with a new order every epoch, repeated forever, whole
  batches only (they may straddle epochs); ``augment(record, rng)`` transforms each record
  first, with a generator seeded by ``seed`` and the record's position in the stream (so a
  restored iterator repeats the same draws); ``mix(batch, rng)`` transforms each whole batch
  likewise (Mixup), seeded by the batch's position; ``worker_count > 0`` runs ``to_example`` in
  grain worker processes, each on its own slice of the records (so the order differs
  from worker_count=0, and a saved state fits the same worker_count only).
  train=False: one in-process pass in stored order; the last batch is padded with
  all-zero rows, and every shard yields ``ceil(ceil(len(source) / shard_count) /
  batch_size)`` batches (all-zero ones after its own), so processes stay in lock step.
  ``to_example`` must give a weight of 0 exactly where the zero rows should not count.
  The iterator's state is a plain record position that survives a JSON round trip. Sources
  of at most MEMOIZE_RECORDS records are kept in memory as they are read (`Memoized`).
  """
  check_shard(shard_index, shard_count)
  small = len(source) <= MEMOIZE_RECORDS
  source = Memoized(source) if small else source
  records = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(records) == 0:
    raise ValueError(
      f"Shard {shard_index}/{shard_count} has no records: the split has "
      f"{len(source)}, fewer than the {shard_count} processes."
    )
  # Read ahead two batches of examples (grain's default is 500 elements on 16 threads). A small
  # data set's records come from memory: there the threads' polling costs more than they save
  # (9 against 18 ms a batch of 64 digits), while decoding JPEGs (PIL frees the GIL) gains.
  read = grain.ReadOptions(num_threads=0 if small else 4, prefetch_buffer_size=2 * batch_size)
  if train:
    records = records.shuffle(seed=seed).repeat(None)
    if augment is not None:
      records = records.random_map(augment, seed=seed)
    examples = records.map(to_example)
    batches = examples.to_iter_dataset(read).batch(batch_size, drop_remainder=True)
    if mix is not None:
      batches = batches.random_map(mix, seed=seed + 1)
    if worker_count > 0:
      batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return JsonState(batches)
  pad_fn = lambda rows: grain.experimental.batch_and_pad(rows, batch_size=batch_size)
  batches = records.map(to_example).to_iter_dataset(read).batch(batch_size, batch_fn=pad_fn)
  example = to_example(source[0])
  pad = {k: np.zeros((batch_size, *np.shape(v)), np.asarray(v).dtype) for k, v in example.items()}
  count = ceil_div(ceil_div(len(source), shard_count), batch_size)
  return PadToCount(batches, count, pad)
