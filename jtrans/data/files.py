"""Local files as random-access sources: your own text, no TFDS build step.

``config.data.name = "files"`` selects them; ``config.data.train_files`` and
``eval_files`` are globs, local or ``gs://`` (several may be joined with commas; ``**``
recurses), and
``config.data.file_format`` says how a file holds documents:

- ``text``: each file is one document, read as UTF-8 exactly (no newline changes);
  records are ``{text_key: str}``.
- ``jsonl``: each non-blank line is one JSON object, a record as is (so seq2seq data
  can carry ``source``/``target`` fields); LM pipelines read its ``text_key`` field.

Files are taken in sorted path order and lines in file order, so the order is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from jtrans import storage

FORMATS = ("text", "jsonl")


def expand(pattern: str, key: str) -> list[str]:
  """Sorted files matching the comma-separated globs ``pattern`` (``config.data.<key>``)."""
  globs = [g.strip() for g in pattern.split(",") if g.strip()]
  if not globs:
    raise ValueError(
      f"config.data.{key} is empty; set it to a glob of your files, e.g. "
      f"--config.data.{key}='/data/corpus/*.txt'."
    )
  matches = {g: storage.glob(g) for g in globs}
  paths = sorted({p for found in matches.values() for p in found})
  missing = [g for g, found in matches.items() if not found]
  if missing:
    raise FileNotFoundError(
      f"config.data.{key}={pattern!r}: no file matches {missing[0]!r}; "
      "fix the glob (relative globs start at the working directory)."
    )
  return paths


class TextFiles(Sequence):
  """One record ``{text_key: contents}`` per file, read when accessed."""

  def __init__(self, paths: list[str], text_key: str):
    self.paths, self.text_key = paths, text_key

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {self.text_key: storage.path(self.paths[i]).read_bytes().decode("utf-8")}


class JsonLines(Sequence):
  """One record per non-blank line of the files; only line offsets are held in memory."""

  def __init__(self, paths: list[str]):
    self.paths = paths
    files, starts = [], []
    for n, path in enumerate(paths):
      offset = 0
      with storage.path(path).open("rb") as f:
        for line in f:
          if line.strip():
            files.append(n)
            starts.append(offset)
          offset += len(line)
    self._file, self._start = np.array(files, np.int32), np.array(starts, np.int64)

  def __len__(self) -> int:
    return len(self._start)

  def __getitem__(self, i: int) -> dict[str, Any]:
    path = self.paths[self._file[i]]
    with storage.path(path).open("rb") as f:
      f.seek(int(self._start[i]))
      line = f.readline()
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(
        f"{path} at byte {self._start[i]}: not a JSON line ({e}); "
        "config.data.file_format='jsonl' needs one JSON object per line."
      ) from e
    if not isinstance(record, dict):
      raise ValueError(
        f"{path} at byte {self._start[i]}: a JSON line must be an object "
        f"(config.data.file_format='jsonl'), got {type(record).__name__}."
      )
    return record


def _has_text(path: str, chunk: int = 1 << 16) -> bool:
  """Whether the file holds anything but whitespace (read until the first such byte)."""
  with storage.path(path).open("rb") as f:
    while block := f.read(chunk):
      if block.strip():
        return True
  return False


def load_files(pattern: str, file_format: str, text_key: str, key: str) -> Sequence[dict[str, Any]]:
  """The records of the files matching ``pattern`` (the value of ``config.data.<key>``)."""
  if file_format not in FORMATS:
    raise ValueError(f"config.data.file_format={file_format!r} is not one of {FORMATS}.")
  paths = expand(pattern, key)
  source = TextFiles(paths, text_key) if file_format == "text" else JsonLines(paths)
  if file_format == "text" and not any(_has_text(path) for path in paths):
    # Packing documents of no tokens would wait forever to fill a row.
    raise ValueError(
      f"config.data.{key}={pattern!r} matches {len(paths)} file(s), but none "
      "holds any text (all are empty or whitespace); point it at your text files."
    )
  if len(source) == 0:
    raise ValueError(
      f"config.data.{key}={pattern!r} matches {len(paths)} files but no "
      "document (only blank lines)."
    )
  return source
