"""Every path jtrans reads or writes, local or `gs://`, goes through `etils.epath` and these helpers.

`epath.Path` speaks the local file system and, through fsspec's `gcsfs`, Cloud Storage (Orbax
and TFDS use the same library, so a `gs://` workdir or data_dir needs nothing else). Object
stores have no append and no rename, so the helpers below write whole files: on GCS an object
appears only once its upload completes, locally a temporary file is renamed into place. Either
way a reader never sees half a file.

To point every client at a local GCS emulator (the tests do), set `STORAGE_EMULATOR_HOST`
(gcsfs, google-cloud-storage), `CLOUD_STORAGE_EMULATOR_ENDPOINT` (ArrayRecord's C++ reader)
and `TENSORSTORE_GCS_HTTP_URL` (Orbax's arrays): see `tests/gcs_test.py`.
"""

from __future__ import annotations

import glob as glob_lib
import os
import uuid

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path`: local paths made absolute, URLs (`gs://...`) kept as they are."""
  return epath.Path(p) if is_remote(p) else epath.Path(p).expanduser().resolve()


def is_remote(p: PathLike) -> bool:
  """Whether `p` is a URL (`gs://bucket/...`, `s3://...`) rather than a local path."""
  return "://" in os.fspath(p)


def write_text(p: PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `p` whole: a reader sees the old file or the new one, never a part."""
  write_bytes(p, text.encode("utf-8"))


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes `data` to `p` whole (see `write_text`)."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    p.write_bytes(data)  # One upload: the object appears complete or not at all.
    return
  tmp = p.parent / f".{p.name}.{uuid.uuid4().hex}.tmp"
  tmp.write_bytes(data)
  tmp.replace(p)


def glob(pattern: PathLike) -> list[str]:
  """Sorted paths matching `pattern` (`*`, `?`, `[...]`, and `**` across folders), local or remote."""
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern), recursive=True))
  import fsspec  # pylint: disable=g-import-not-at-top  (epath's own glob refuses `**` on GCS)

  fs, _ = fsspec.core.url_to_fs(pattern)
  scheme = pattern.split("://", 1)[0]
  found = fs.glob(pattern, detail=True)  # One listing gives each match's type: no stat per file.
  return sorted(f"{scheme}://{p}" for p, info in found.items() if info["type"] == "file")


def _files(root: epath.Path) -> list[epath.Path]:
  """Every file below `root`, by walking folders (GCS lists one level per request)."""
  found = []
  for child in root.iterdir():
    found.extend(_files(child) if child.is_dir() else [child])
  return found


def copy_tree(source: PathLike, destination: PathLike) -> None:
  """Copies every file under `source` to the same place under `destination` (e.g. local -> gs://)."""
  source, destination = path(source), path(destination)
  for file in _files(source):
    target = destination / os.path.relpath(os.fspath(file), os.fspath(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(file.read_bytes())


def move_tree(source: PathLike, destination: PathLike) -> None:
  """Renames a folder; on an object store (no folders, no rename) copies its files, then deletes."""
  source, destination = path(source), path(destination)
  if not is_remote(source):
    source.rename(destination)
    return
  copy_tree(source, destination)
  source.rmtree()
