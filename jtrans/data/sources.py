"""Random-access sources: TFDS data sets (array_record, read without TensorFlow) or local files.

``from_config`` picks one from ``config.data``: ``name = "files"`` reads the files of
``train_files``/``eval_files`` (``files.py``); any other name is a TFDS data set.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jtrans import storage
from jtrans.data import files, pydoc_corpus, shakespeare, synthetic_images, synthetic_tasks

# Builders of this project: they download nothing, so they are prepared on demand.
LOCAL_BUILDERS: frozenset[str] = frozenset({
    pydoc_corpus.PydocTopics.name,
    synthetic_tasks.ModularArithmetic.name,
    synthetic_tasks.CopyStrings.name,
    synthetic_tasks.ReverseStrings.name,
    synthetic_images.SyntheticImages.name,
    shakespeare.TinyShakespeareFile.name,  # Reads input.txt from the manual_dir.
})
FILES = "files"  # config.data.name of local files.
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


def record_text(record: dict[str, Any], key: str, setting: str = "text_key") -> str:
  """Field ``key`` (the value of ``config.data.<setting>``) of a record, as str."""
  try:
    text = record[key]
  except KeyError:
    raise KeyError(f"Records have no field {key!r} (config.data.{setting}); their fields are "
                   f"{sorted(record)}.") from None
  return text.decode("utf-8") if isinstance(text, bytes) else str(text)  # TFDS Text: bytes.


def from_config(data: ml_collections.ConfigDict, train: bool) -> Sequence[dict[str, Any]]:
  """The train or eval records that ``config.data`` names (TFDS data set or local files)."""
  if data.name == FILES:
    key = "train_files" if train else "eval_files"
    return files.load_files(data[key], data.file_format, data.text_key, key)
  split = data.train_split if train else data.eval_split
  return load_source(data.name, split, data.data_dir or None, data.manual_dir or None)


def _prepare(builder: tfds.core.DatasetBuilder, name: str, root: str,
             manual_dir: str | None) -> None:
  """Prepares a project builder into `root`. ArrayRecord writes local files only, so for a
  `gs://` data_dir it is prepared in a local temporary folder and its files are copied up."""
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  if not storage.is_remote(root):
    builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)
    return
  with tempfile.TemporaryDirectory() as local:
    local_builder = tfds.builder(name, data_dir=local, file_format=FILE_FORMAT)
    local_builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)
    relative = os.path.relpath(os.fspath(local_builder.data_path), local)
    storage.copy_tree(local_builder.data_path, storage.path(root) / relative)


def load_source(name: str, split: str, data_dir: str | None,
                manual_dir: str | None = None) -> Sequence[dict[str, Any]]:
  """Returns a random-access source of decoded records of ``name``'s ``split``.

  Project builders (``LOCAL_BUILDERS``) are prepared into ``data_dir`` when
  missing (those that read local files find them in ``manual_dir``; None = TFDS's
  ``<data_dir>/downloads/manual``); any other data set must already be prepared as array_record there,
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
        f" own are {sorted(LOCAL_BUILDERS)}, and {FILES!r} reads config.data.train_files."
    ) from e
  root = str(builder.data_dir_root)
  if not builder.is_prepared():
    if builder.name in LOCAL_BUILDERS:
      _prepare(builder, name, root, manual_dir)
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
