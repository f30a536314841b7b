"""TFDS builder ``synthetic_images``: seeded stripe pictures in 10 classes, for ViT tests.

Each record is ``{'image': uint8 [32, 32, 3], 'label': int64 in [0, 10), 'index': int64}``.
Class ``c`` is a sine grating at angle ``36 * (c % 5)`` degrees with 2 (c < 5) or 5
(c >= 5) cycles across the image; phase, colours (two per image, well apart) and a
+-10% frequency jitter are random, and Gaussian noise (sigma 16) is added. Orientation
and frequency are all that tell the classes apart, so a tiny ViT learns them in a few
hundred steps while chance is 10%. 10,000 train and 1,000 validation images, each
split from its own seed, labels balanced. Nothing is downloaded.

Images are stored as plain uint8 tensors: ``tfds.features.Image`` encodes PNG with
TensorFlow, which jtrans does not install.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SIZE, CHANNELS, NUM_CLASSES = 32, 3, 10


def image_info(
  builder: tfds.core.DatasetBuilder, description: str, shape: tuple[int, int, int], classes: int
) -> tfds.core.DatasetInfo:
  """The features of jtrans's image builders: uint8 ``image`` of ``shape``, ``label``, ``index``."""
  return tfds.core.DatasetInfo(
    builder=builder,
    description=description,
    supervised_keys=("image", "label"),
    features=tfds.features.FeaturesDict(
      {
        "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=classes),
        "index": np.int64,
      }
    ),
  )


def draw(labels: np.ndarray, seed: int) -> np.ndarray:
  """uint8 [len(labels), SIZE, SIZE, CHANNELS] images of the given classes."""
  rng = np.random.default_rng(seed)
  n = len(labels)
  angle = np.deg2rad(36.0 * (labels % 5))
  cycles = np.where(labels < 5, 2.0, 5.0) * rng.uniform(0.9, 1.1, n)
  phase = rng.uniform(0, 2 * np.pi, n)
  y, x = (np.mgrid[0:SIZE, 0:SIZE] / SIZE).astype(np.float32)
  col = lambda v: v.astype(np.float32)[:, None, None]  # [n] -> [n, 1, 1]
  along = x[None] * col(np.cos(angle)) + y[None] * col(np.sin(angle))
  wave = np.sin(col(2 * np.pi * cycles) * along + col(phase))  # In [-1, 1].
  # Per channel, foreground and background sit 100-220 apart around mid grey.
  half = rng.uniform(50, 110, (n, CHANNELS)) * rng.choice([-1.0, 1.0], (n, CHANNELS))
  image = 128 + half.astype(np.float32)[:, None, None, :] * wave[..., None]
  image += 16 * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


class SyntheticImages(tfds.core.GeneratorBasedBuilder):
  """Stripe orientation x frequency: 10 classes of 32x32 RGB images (train/validation)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPLITS = {"train": (10_000, 1), "validation": (1_000, 2)}  # split: (images, seed).
  code_path = epath.Path(__file__)  # TFDS's own lookup needs importlib_resources.

  def _info(self) -> tfds.core.DatasetInfo:
    return image_info(self, __doc__, (SIZE, SIZE, CHANNELS), NUM_CLASSES)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(n, seed) for split, (n, seed) in self.SPLITS.items()}

  def _generate_examples(self, n: int, seed: int) -> Iterator[tuple[int, dict]]:
    labels = np.random.default_rng([seed, 0]).permutation(np.arange(n) % NUM_CLASSES)
    images = draw(labels, seed)
    for i in range(n):
      yield i, {"image": images[i], "label": int(labels[i]), "index": i}
