"""TFDS builder ``digits``: scikit-learn's handwritten digits (UCI optdigits' test set), offline.

``sklearn.datasets.load_digits`` ships the 1,797 8x8 images inside the scikit-learn package
(nothing is downloaded). Each record is ``{'image': uint8 [8, 8, 1], 'label': int64 in
[0, 10), 'index': int64}``; pixels are the data set's 0..16 ink counts scaled to 0..255
(``round(v * 255 / 16)``). The split is fixed: a permutation seeded with 0, stratified by class
(80% of each digit, rounded, for ``train``: 1,438 images; the rest for ``test``: 359), so every run and
every paper row sees the same held-out images. ``validation`` is the same as ``test`` (the
default eval split reads it).

TFDS builder ``digit_captions``: the same images and splits, each with a ``caption`` (text) for
CLIP-style training: one of ``CAPTION_TEMPLATES``, filled with the digit's word ("seven") or
numeral ("7"), drawn from a generator seeded by the record's index (fixed across builds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jtrans.data import synthetic_images

SIZE, NUM_CLASSES, TRAIN_FRACTION = 8, 10, 0.8
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
  "a photo of the digit {}",
  "handwritten {}",
  "a handwritten {}",
  "the number {}",
  "a drawing of the digit {}",
  "an image of a {}",
  "{} written by hand",
  "a small blurry {}",
)


def caption(label: int, index: int) -> str:
  """The caption of record `index`, of digit `label`: a template and a word or numeral drawn
  from a generator seeded by the index."""
  rng = np.random.default_rng([index, 17])
  template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
  return template.format(WORDS[label] if rng.random() < 0.5 else str(label))


def split_indices(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """Sorted record indices of each split: TRAIN_FRACTION of every class, seeded."""
  rng = np.random.default_rng(seed)
  train = []
  for digit in range(NUM_CLASSES):
    members = rng.permutation(np.flatnonzero(labels == digit))
    train.append(members[: int(round(TRAIN_FRACTION * len(members)))])
  train = np.sort(np.concatenate(train))
  test = np.setdiff1d(np.arange(len(labels)), train)
  return {"train": train, "test": test, "validation": test}


def load() -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images [1797, 8, 8, 1], int labels [1797]) from scikit-learn's bundled copy."""
  from sklearn.datasets import load_digits  # Heavy; only when the data set is prepared.

  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)[..., None]
  return images, digits.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits: 10 classes, fixed train/test split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  code_path = epath.Path(__file__)  # TFDS's own lookup needs importlib_resources.

  def _info(self) -> tfds.core.DatasetInfo:
    return synthetic_images.image_info(self, __doc__, (SIZE, SIZE, 1), NUM_CLASSES)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the images ship inside scikit-learn.
    images, labels = load()
    splits = split_indices(labels)
    return {name: self._generate_examples(images, labels, idx) for name, idx in splits.items()}

  def _generate_examples(
    self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
  ) -> Iterator[tuple[int, dict]]:
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i]), "index": int(i)}


class DigitCaptions(Digits):
  """The digits with a templated caption each (``caption``), for contrastive image-text models."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    info = synthetic_images.image_info(self, __doc__, (SIZE, SIZE, 1), NUM_CLASSES)
    features = dict(info.features)
    features["caption"] = tfds.features.Text()
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      supervised_keys=("image", "caption"),
      features=tfds.features.FeaturesDict(features),
    )

  def _generate_examples(self, images, labels, indices):
    for key, record in super()._generate_examples(images, labels, indices):
      yield key, {**record, "caption": caption(record["label"], record["index"])}
