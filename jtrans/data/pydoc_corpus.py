"""TFDS builder ``pydoc_topics``: the English docs text every CPython ships.

``pydoc_data.topics.topics`` maps 79 topic names (e.g. ``'assignment'``) to
~465k characters of reference text (CPython 3.11). Nothing is downloaded.

Records: ``{'text': str, 'index': int64}``, one per topic; ``index`` is the
topic's position in sorted key order (TFDS shuffles records by key hash when
writing, so readers sort by ``index`` to recover a fixed order).

Validation rule (deterministic, whole topics): walk the topics in order of the
SHA-256 hex digest of their name and put a topic into ``validation`` if the
validation total then stays <= 10% of all characters; everything else is
``train``. The text differs between CPython versions, so the split is a rule,
not a fixed list (see ``validation_topics``). On CPython 3.11 it picks 20 topics,
46,385 of 464,970 characters (train: 59 topics, 418,585 characters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

VALIDATION_FRACTION = 0.10


def load_topics() -> dict[str, str]:
  """Returns the pydoc topics, name -> text, in sorted name order."""
  from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top

  return {name: topics[name] for name in sorted(topics)}


def validation_topics(topics: Mapping[str, str]) -> list[str]:
  """Names of the validation topics (sorted), chosen by the module's rule."""
  budget = VALIDATION_FRACTION * sum(len(text) for text in topics.values())
  by_hash = sorted(topics, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
  chosen, total = [], 0
  for name in by_hash:
    if total + len(topics[name]) <= budget:
      chosen.append(name)
      total += len(topics[name])
  return sorted(chosen)


class PydocTopics(tfds.core.GeneratorBasedBuilder):
  """CPython's pydoc topic texts as a text data set (train/validation)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # TFDS derives this via `importlib_resources` (not installed) for builders that
  # live in a package outside tensorflow_datasets; give it directly instead.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "index": np.int64}),
      supervised_keys=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    topics = load_topics()
    val = set(validation_topics(topics))
    return {
      "train": self._generate_examples(topics, lambda name: name not in val),
      "validation": self._generate_examples(topics, lambda name: name in val),
    }

  def _generate_examples(
    self, topics: Mapping[str, str], keep: Callable[[str], bool]
  ) -> Iterator[tuple[str, dict]]:
    """Yields ``(topic name, {'text', 'index'})`` for the kept topics."""
    for index, (name, text) in enumerate(topics.items()):
      if keep(name):
        yield name, {"text": text, "index": index}
