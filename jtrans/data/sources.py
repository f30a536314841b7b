"""Random-access sources: TFDS data sets (array_record, read without TensorFlow) or local files.

``from_config`` picks one from ``config.data``: ``name = "files"`` reads the files of
``train_files``/``eval_files`` (``files.py``); any other name is a TFDS data set, found by its
TFDS name (``lm1b``, ``wmt14_translate/de-en``, ``c4/en``, ``imagenet2012``, ...) in
``data_dir``. ``check_config`` holds ``config.data`` against the data set's own info at start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jtrans import storage
from jtrans.data import (
  digits,
  files,
  pydoc_corpus,
  shakespeare,
  synthetic_images,
  synthetic_tasks,
)

# Builders of this project: they download nothing, so they are prepared on demand.
LOCAL_BUILDERS: frozenset[str] = frozenset(
  {
    pydoc_corpus.PydocTopics.name,
    synthetic_tasks.ModularArithmetic.name,
    synthetic_tasks.CopyStrings.name,
    synthetic_tasks.ReverseStrings.name,
    synthetic_images.SyntheticImages.name,
    digits.Digits.name,  # Images shipped inside scikit-learn.
    digits.DigitCaptions.name,  # The same, with templated captions.
    shakespeare.TinyShakespeareFile.name,  # Reads input.txt from the manual_dir.
  }
)
FILES = "files"  # config.data.name of local files.
FILE_FORMAT = "array_record"
# The config.data keys naming the record fields each objective reads (config.loss.objective).
FIELDS: dict[str, tuple[str, ...]] = {
  "lm": ("text_key",),
  "mlm": ("text_key",),
  "seq2seq": ("source_key", "target_key"),
  "span_corruption": ("text_key",),
  "classification": ("image_key", "label_key"),
  "diffusion": ("image_key", "label_key"),
  "contrastive": ("image_key", "caption_key"),
}
# TFDS's packages of its own builders (tensorflow_datasets/<family>/...).
TFDS_FAMILIES = (
  "audio",
  "graphs",
  "image",
  "image_classification",
  "object_detection",
  "nearest_neighbors",
  "question_answering",
  "d4rl",
  "ranking",
  "recommendation",
  "structured",
  "summarization",
  "text",
  "text_simplification",
  "time_series",
  "translate",
  "video",
  "vision_language",
)


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS data set is not prepared (as array_record) in the data_dir."""


def build_command(name: str, data_dir: str) -> str:
  """The shell command that prepares ``name`` for ``load_source``."""
  return f"tfds build {name} --data_dir={data_dir} --file_format={FILE_FORMAT}"


def field_settings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The config.data settings naming the record fields the run reads: FIELDS of its objective,
  or source_key and target_key for an "lm" run with sampling="prompt_response"."""
  d = config.data
  if config.loss.objective == "lm" and d.sampling == "prompt_response":
    return ("source_key", "target_key")
  if config.loss.objective == "lm" and d.sampling == "chat":
    return ("messages_key",) if d.messages_key else ("source_key", "target_key")
  return FIELDS.get(config.loss.objective, ("text_key",))


def text_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The record fields whose text the run tokenizes (and a SentencePiece model for it is
  trained on): ``text_key``, ``source_key`` and ``target_key`` for pairs, ``caption_key``."""
  settings = field_settings(config)
  texts = ("text_key", "source_key", "target_key", "caption_key")
  return tuple(config.data[s] for s in settings if s in texts)


@functools.cache
def _import_tfds_builders() -> None:
  """Registers TFDS's own builders. TFDS imports its families on the first unknown name, in one
  try block: without h5py (which `nearest_neighbors` needs) it stops there, and `text` (lm1b's
  neighbours c4, ...) and `translate` (wmt14_translate, ...) are never registered (tfds 4.9.10).
  Each family is imported on its own here; one that cannot be imported is skipped."""
  for family in TFDS_FAMILIES:
    try:
      importlib.import_module(f"tensorflow_datasets.{family}")
    except ImportError:
      pass


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """TFDS's builder of data set ``name`` (``name/config`` selects a builder config)."""
  make = lambda: tfds.builder(name, data_dir=data_dir or None, file_format=FILE_FORMAT)
  try:
    return make()
  except tfds.core.registered.DatasetNotFoundError:
    _import_tfds_builders()  # Then once more.
  try:
    return make()
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
      f"{name!r} (config.data.name) is not a registered TFDS data set; the project's"
      f" own are {sorted(LOCAL_BUILDERS)}, and {FILES!r} reads config.data.train_files."
    ) from e


def _not_prepared(name: str, root: str) -> DatasetNotPreparedError:
  return DatasetNotPreparedError(
    f"TFDS data set {name!r} (config.data.name) is not prepared in data_dir {root!r} "
    f"(config.data.data_dir). Prepare it (on a machine with internet; the README's \"TFDS data "
    f'sets" says what each needs) with: {build_command(name, root)}'
  )


def _check_split(builder: tfds.core.DatasetBuilder, split: str, setting: str) -> None:
  """``split`` (TFDS syntax: ``train``, ``train[:90%]``, ``train+test``) names only splits the
  prepared data set has."""
  names = set(builder.info.splits.keys())
  for part in split.split("+"):
    base = re.sub(r"\[.*\]$", "", part.strip())
    if base not in names:
      raise ValueError(
        f"{builder.info.full_name} has no split {base!r} (config.data.{setting}="
        f"{split!r}); its splits are {sorted(names)}."
      )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Start-up checks of ``config.data`` against a TFDS data set's own info (none for files), so
  that a setting that cannot work fails before anything is built, naming the setting: the data
  set is prepared (jtrans's own builders are prepared on first use), the splits exist, the
  records hold the fields config.loss.objective reads, and a classifier has an output for
  every label and the images' channels."""
  d = config.data
  if d.sampling not in ("packed", "windows", "prompt_response", "chat"):
    raise ValueError(
      f"config.data.sampling={d.sampling!r}: use 'packed', 'windows', 'prompt_response' or 'chat'."
    )
  if d.sampling in ("prompt_response", "chat") and config.loss.objective != "lm":
    raise ValueError(
      f"config.data.sampling={d.sampling!r} makes next-token rows with loss on the "
      f"responses, for config.loss.objective='lm' (it is {config.loss.objective!r}); use "
      "sampling='packed'."
    )
  if d.sampling == "windows" and d.segment_ids:
    raise ValueError(
      "config.data.sampling='windows' draws windows across document boundaries, which "
      "config.data.segment_ids=True cannot mark; use sampling='packed' with segment ids."
    )
  if d.name == FILES:
    return  # Fields of the user's files are checked record by record (record_text).
  builder = _builder(d.name, d.data_dir)
  if builder.is_prepared():
    for setting in ("train_split", "eval_split"):
      _check_split(builder, d[setting], setting)
  elif builder.name not in LOCAL_BUILDERS:
    raise _not_prepared(d.name, str(builder.data_dir_root))
  features = builder.info.features
  for setting in field_settings(config):
    if d[setting] not in features:
      raise ValueError(
        f"config.data.{setting}={d[setting]!r} is not a feature of {d.name}; its "
        f"features are {sorted(features.keys())}."
      )
  if config.loss.objective == "contrastive" and d.class_names and d.label_key not in features:
    raise ValueError(
      f"config.data.class_names scores zero-shot accuracy against config.data.label_key="
      f"{d.label_key!r}, which is not a feature of {d.name}; set class_names to ''."
    )
  if config.loss.objective in ("classification", "contrastive", "diffusion"):
    shape = getattr(features[d.image_key], "shape", None)
    if shape and shape[-1] not in (None, config.model.num_channels):
      raise ValueError(
        f"config.model.num_channels={config.model.num_channels}, but {d.name}'s "
        f"{d.image_key!r} images have {shape[-1]} channels; set it to {shape[-1]}."
      )
  if config.loss.objective in ("classification", "diffusion"):
    classes = getattr(features[d.label_key], "num_classes", None)
    if classes and classes > config.model.num_classes:
      raise ValueError(
        f"config.model.num_classes={config.model.num_classes} is smaller than the "
        f"{classes} classes of {d.name}'s {d.label_key!r}; set it to {classes}."
      )


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
    raise KeyError(
      f"Records have no field {key!r} (config.data.{setting}); their fields are {sorted(record)}."
    ) from None
  return text.decode("utf-8") if isinstance(text, bytes) else str(text)  # TFDS Text: bytes.


def from_config(data: ml_collections.ConfigDict, train: bool) -> Sequence[dict[str, Any]]:
  """The train or eval records that ``config.data`` names (TFDS data set or local files)."""
  if data.name == FILES:
    key = "train_files" if train else "eval_files"
    return files.load_files(data[key], data.file_format, data.text_key, key)
  setting = "train_split" if train else "eval_split"
  return load_source(
    data.name, data[setting], data.data_dir or None, data.manual_dir or None, setting
  )


def _prepare(
  builder: tfds.core.DatasetBuilder, name: str, root: str, manual_dir: str | None
) -> None:
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


@contextlib.contextmanager
def _preparing(name: str, root: str):
  """Holds an exclusive lock on preparing `name` in a local `root`, so that two runs started
  together on one machine do not both write it (TFDS's final rename fails for the second).
  Several hosts are kept apart by `parts.prepare_data` instead; gs:// needs no lock here."""
  if storage.is_remote(root):
    yield
    return
  os.makedirs(root, exist_ok=True)
  lock_path = os.path.join(root, f".{name.replace('/', '_').replace(':', '_')}.jtrans-lock")
  with open(lock_path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def load_source(
  name: str, split: str, data_dir: str | None, manual_dir: str | None = None, setting: str = "split"
) -> Sequence[dict[str, Any]]:
  """Returns a random-access source of decoded records of ``name``'s ``split``.

  Project builders (``LOCAL_BUILDERS``) are prepared into ``data_dir`` when
  missing (those that read local files find them in ``manual_dir``; None = TFDS's
  ``<data_dir>/downloads/manual``); any other data set must already be prepared as array_record there,
  else ``DatasetNotPreparedError`` names the command that prepares it. A split the data set
  lacks fails naming ``config.data.<setting>`` and the splits there are. Records
  are dicts of numpy values (text features come back as ``bytes``). When the
  data set has an ``index`` feature the records are sorted by it, so the order
  does not depend on TFDS's write-time shuffle; otherwise the stored order is
  used (fixed once the data set is prepared).
  """
  builder = _builder(name, data_dir)
  if not builder.is_prepared():
    if builder.name not in LOCAL_BUILDERS:
      raise _not_prepared(name, str(builder.data_dir_root))
    with _preparing(name, str(builder.data_dir_root)):
      builder = _builder(name, data_dir)  # Another run may have prepared it meanwhile.
      if not builder.is_prepared():
        _prepare(builder, name, str(builder.data_dir_root), manual_dir)
    builder = _builder(name, data_dir)  # Its info now holds the splits.
  _check_split(builder, split, setting)
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError as e:  # Prepared, but not as array_record (TFRecord, say).
    raise DatasetNotPreparedError(
      f"TFDS data set {name!r} in data_dir {builder.data_dir_root} is not stored as "
      f"{FILE_FORMAT} (random access needs it). Convert it where it is with: tfds "
      f"convert_format --dataset_version_dir={builder.data_dir} --out_file_format="
      f"{FILE_FORMAT}"
    ) from e
  if "index" in source.dataset_info.features:
    index = np.array([int(source[i]["index"]) for i in range(len(source))])
    return SortedSource(source, np.argsort(index, kind="stable"))
  return source
