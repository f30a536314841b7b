"""grain pipeline for image classification: uint8 images and labels -> ViT batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jtrans.data.iterators import Batch, record_batches


class _ToExample:
  """Record -> ``{'images': float32 [H, W, C] in [-1, 1], 'targets': int32 [], 'weights': 1.0}``."""

  def __init__(self, image_key: str, label_key: str):
    self.image_key, self.label_key = image_key, label_key

  def __call__(self, record: dict[str, Any]) -> Batch:
    image = np.asarray(record[self.image_key])
    if image.dtype != np.uint8 or image.ndim != 3:
      raise ValueError(f"config.data.image_key={self.image_key!r} must name uint8 [H, W, C] "
                       f"images, got {image.dtype} {image.shape}.")
    # ViT's preprocessing: mean 0.5, std 0.5 on [0, 1] pixels.
    return {"images": image.astype(np.float32) / 127.5 - 1.0,
            "targets": np.asarray(record[self.label_key], np.int32),
            "weights": np.float32(1.0)}


def make_image_dataset(
    *,
    source: Sequence[dict[str, Any]],
    image_key: str,
    label_key: str,
    batch_size: int,
    seed: int,
    train: bool,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
) -> grain.IterDataset:
  """Returns a grain dataset of classification batches of the images in ``source``.

  Each element (B = ``batch_size``, this process's share of the global batch):
    ``images`` float32 [B, H, W, C]: pixels scaled from [0, 255] to [-1, 1];
    ``targets`` int32 [B]: the labels;
    ``weights`` float32 [B]: 1 per image, 0 on eval padding.
  Shuffling, shards, eval padding (all-zero rows) and resumable state are those of
  ``iterators.record_batches``. No augmentation.
  """
  return record_batches(
      source, _ToExample(image_key, label_key), batch_size=batch_size, seed=seed, train=train,
      shard_index=shard_index, shard_count=shard_count, worker_count=worker_count)
