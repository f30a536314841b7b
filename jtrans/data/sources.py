"""Random-access TFDS sources (array_record files, read without TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jtrans.data import pydoc_corpus

# Builders of this project: they download nothing, so they are prepared on demand.
LOCAL_BUILDERS: frozenset[str] = frozenset({pydoc_corpus.PydocTopics.name})
FILE_FORMAT = "array_record"


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS data set is not prepared (as array_record) in the data_dir."""


def build_command(name: str, data_dir: str) -> str:
  """The shell command that prepares ``name`` for ``load_source``."""
  return f"tfds build {name} --data_dir={data_dir} --file_format={FILE_FORMAT}"


class SortedSource(Sequence):
  """A random-access source re-ordered by a permutation: ``self[i] = source[order[i]]``."""

  def __init__(self, source: Sequence[Any], order: np.ndarray):
    self._source = source
    self._order = order

  def __len__(self) -> int:
    return len(self._order)

  def __getitem__(self, i: int) -> Any:
    return self._source[int(self._order[i])]

  def __repr__(self) -> str:
    return f"SortedSource({self._source!r})"


def load_source(name: str, split: str, data_dir: str | None) -> Sequence[dict[str, Any]]:
  """Returns a random-access source of decoded records of ``name``'s ``split``.

  Project builders (``LOCAL_BUILDERS``) are prepared into ``data_dir`` when
  missing; any other data set must already be prepared as array_record there,
  else ``DatasetNotPreparedError`` names the command that prepares it. Records
  are dicts of numpy values (text features come back as ``bytes``). When the
  data set has an ``index`` feature the records are sorted by it, so the order
  does not depend on TFDS's write-time shuffle; otherwise the stored order is
  used (fixed once the data set is prepared).
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format=FILE_FORMAT)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f"{name!r} (config.data.name) is not a registered TFDS data set; the project's"
        f" own are {sorted(LOCAL_BUILDERS)}."
    ) from e
  root = str(builder.data_dir_root)
  if not builder.is_prepared():
    if builder.name in LOCAL_BUILDERS:
      builder.download_and_prepare(file_format=FILE_FORMAT)
    else:
      raise DatasetNotPreparedError(
          f"TFDS data set {name!r} is not prepared in data_dir {root!r}. Prepare it"
          f" (on a machine with internet) with: {build_command(name, root)}"
      )
  try:
    source = tfds.data_source(
        name, split=split, data_dir=root, download=False,
        builder_kwargs={"file_format": FILE_FORMAT},
    )
  except NotImplementedError as e:  # Prepared, but not as array_record.
    raise DatasetNotPreparedError(
        f"TFDS data set {name!r} in data_dir {root!r} is not stored as {FILE_FORMAT}"
        f" (random access needs it). Rebuild it with: {build_command(name, root)}"
    ) from e
  if "index" in source.dataset_info.features:
    index = np.array([int(source[i]["index"]) for i in range(len(source))])
    return SortedSource(source, np.argsort(index, kind="stable"))
  return source
