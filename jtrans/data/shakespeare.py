"""TFDS builder ``tiny_shakespeare_file``: Karpathy's Tiny Shakespeare from a local ``input.txt``.

TFDS's own ``tiny_shakespeare`` downloads the file and needs TensorFlow; this one reads
``input.txt`` from the TFDS manual_dir (``config.data.manual_dir``; "" = TFDS's
``<data_dir>/downloads/manual``) and makes the same splits: one record per split,
``{'text': str}``, cut by characters as TFDS does: ``i = int(0.9 * n)`` characters
for train; of the rest, the first ``int(0.5 * len(rest))`` for validation and the
remainder for test. The three texts concatenate back to the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import tensorflow_datasets as tfds
from etils import epath

from jtrans import storage

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
FILE = "input.txt"


def split_text(text: str) -> dict[str, str]:
  """Splits as TFDS's tiny_shakespeare builder (4.9.10): 90% / 5% / 5% of the characters."""
  i = int(len(text) * 0.9)
  train, rest = text[:i], text[i:]
  i = int(len(rest) * 0.5)
  return {"train": train, "validation": rest[:i], "test": rest[i:]}


class TinyShakespeareFile(tfds.core.GeneratorBasedBuilder):
  """Tiny Shakespeare (1.1M characters) read from a local input.txt; train/validation/test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put Tiny Shakespeare's {FILE} (from {URL}) in the manual_dir."
  code_path = epath.Path(__file__)  # TFDS's own lookup needs importlib_resources.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage=URL,
      features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # dl_manager.manual_dir asserts that the folder exists; name the file instead.
    path = storage.path(dl_manager._manual_dir) / FILE  # pylint: disable=protected-access
    if not path.is_file():
      raise FileNotFoundError(
        f"Tiny Shakespeare needs {path}: download {URL} there (or point "
        "config.data.manual_dir at the folder that holds input.txt)."
      )
    text = path.read_bytes().decode("utf-8")
    return {split: self._generate_examples(split, t) for split, t in split_text(text).items()}

  def _generate_examples(self, split: str, text: str) -> Iterator[tuple[str, dict]]:
    yield split, {"text": text}
