"""grain pipeline for image classification: images of any size and labels -> ViT batches.

Every image becomes an ``image_size`` square (``ImageOptions``), the ImageNet way:
- evaluation, and training without augmentation: the shorter side is resized to
  ``int(image_size / crop_fraction)`` and the centre cropped (ImageNet's 0.875: 256 -> 224, as
  torchvision's Resize + CenterCrop and Hugging Face's ``crop_pct``; with 1.0, the default, an
  image that is already an ``image_size`` square is kept as it is);
- training with ``augment="inception_crop_flip"``: Inception's random crop (Szegedy et al.
  2015; torchvision's RandomResizedCrop): a region of 8% to 100% of the area with aspect ratio
  in [3/4, 4/3], resized to the square, then flipped left-right half the time. The randomness is
  seeded by the record's position in the stream, so a resumed run sees the same crops.
  ``crop_area_min`` moves the 8% (big_vision's plain ViT uses 5%); with ``randaugment_layers``
  RandAugment follows (``jtrans.data.randaugment``), as in big_vision's
  ``inception_crop|flip_lr|randaug(2,10)``.
- training with ``mixup > 0``: each batch is blended with itself rolled by one row, in one ratio
  ``max(r, 1 - r)``, ``r ~ Beta(mixup, mixup)`` (big_vision's Mixup); the batch gains
  ``mixed_targets`` (the rolled labels) and ``mix`` (the ratio, per row) for the loss.
Pixels are then normalised per channel, ``(x / 255 - mean) / std`` (ViT's mean = std = 0.5
maps [0, 255] to [-1, 1]; ImageNet's are (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225)).
Resizing is bilinear, with PIL (what TFDS decodes JPEGs with when TensorFlow is absent).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from PIL import Image

from jtrans.data.iterators import Batch, record_batches
from jtrans.data.randaugment import rand_augment
from jtrans.data.sources import record_text
from jtrans.data.tokenizers import Tokenizer

AUGMENTS = ("none", "inception_crop_flip")


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How records' images become model inputs (``config.data.image_*`` and ``crop_fraction``)."""

  size: int  # config.model.image_size: the square side the model takes.
  mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # Per channel, of [0, 1] pixels.
  std: tuple[float, ...] = (0.5, 0.5, 0.5)
  augment: str = "none"  # Training only: one of AUGMENTS.
  crop_fraction: float = 1.0  # Of the resized shorter side, the centre crop keeps this much.
  crop_area_min: float = 0.08  # inception_crop_flip: the smallest crop's share of the area.
  randaugment_layers: int = 0  # Training: RandAugment operations per image (0: none).
  randaugment_magnitude: float = 10  # Their shared magnitude, 0 to 10.
  mixup: float = 0.0  # Training: Beta(mixup, mixup) blends of each batch (0: none).

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> ImageOptions:
    d = config.data
    return cls(
      size=config.model.image_size,
      mean=tuple(d.image_mean),
      std=tuple(d.image_std),
      augment=d.image_augment,
      crop_fraction=d.crop_fraction,
      crop_area_min=d.crop_area_min,
      randaugment_layers=d.randaugment_layers,
      randaugment_magnitude=d.randaugment_magnitude,
      mixup=d.mixup,
    )

  def __post_init__(self):
    if self.augment not in AUGMENTS:
      raise ValueError(f"config.data.image_augment={self.augment!r} is not one of {AUGMENTS}.")
    if not 0 < self.crop_fraction <= 1:
      raise ValueError(f"config.data.crop_fraction={self.crop_fraction} must be in (0, 1].")
    if not 0 < self.crop_area_min <= 1:
      raise ValueError(f"config.data.crop_area_min={self.crop_area_min} must be in (0, 1].")
    if self.randaugment_layers < 0 or not 0 <= self.randaugment_magnitude <= 10:
      raise ValueError(
        f"config.data.randaugment_layers={self.randaugment_layers} must be >= 0 and "
        f"randaugment_magnitude={self.randaugment_magnitude} in [0, 10]."
      )
    if self.mixup < 0:
      raise ValueError(f"config.data.mixup={self.mixup} must be >= 0 (0 turns Mixup off).")
    if len(self.mean) != len(self.std) or min(self.std) <= 0:
      raise ValueError(
        f"config.data.image_mean={self.mean} and image_std={self.std} need one "
        "value per channel each, and positive stds."
      )


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, C] -> uint8 [height, width, C], bilinear (PIL, with its antialiasing)."""
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
  return out.reshape(height, width, channels)


def centre_crop(image: np.ndarray, size: int, crop_fraction: float) -> np.ndarray:
  """The evaluation view: shorter side resized to ``int(size / crop_fraction)``, the centre
  ``size`` square cut out. uint8 [h, w, C] -> uint8 [size, size, C]."""
  h, w = image.shape[:2]
  short = int(size / crop_fraction)
  if h <= w:
    image = resize(image, short, int(short * w / h))
  else:
    image = resize(image, int(short * h / w), short)
  h, w = image.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top : top + size, left : left + size]


def inception_crop(
  image: np.ndarray,
  size: int,
  rng: np.random.Generator,
  area: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """A random region of ``area`` of the image's area and aspect ratio (w / h) in ``ratio``
  (log-uniform), resized to a ``size`` square; after 10 draws that do not fit, the centre
  of the whole image at the nearest allowed ratio. uint8 [h, w, C] -> uint8 [size, size, C]."""
  h, w = image.shape[:2]
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      break
  else:
    aspect = min(max(w / h, ratio[0]), ratio[1])
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    cw, ch = min(cw, w), min(ch, h)
    top, left = (h - ch) // 2, (w - cw) // 2
  return resize(image[top : top + ch, left : left + cw], size, size)


def _pixels(record: dict[str, Any], key: str) -> np.ndarray:
  image = np.asarray(record[key])
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(
      f"config.data.image_key={key!r} must name uint8 [H, W, C] images, got "
      f"{image.dtype} {image.shape}."
    )
  return image


class _Augment:
  """Training view of a record's image (random crop and flip), before ``_ToExample``."""

  def __init__(self, image_key: str, options: ImageOptions):
    self.image_key, self.options = image_key, options

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    o = self.options
    image = _pixels(record, self.image_key)
    if o.augment == "inception_crop_flip":
      image = inception_crop(image, o.size, rng, area=(o.crop_area_min, 1.0))
      if rng.random() < 0.5:
        image = np.ascontiguousarray(image[:, ::-1])
    else:
      image = centre_crop(image, o.size, o.crop_fraction)
    if o.randaugment_layers:
      image = rand_augment(image, rng, o.randaugment_layers, o.randaugment_magnitude)
    return {**record, self.image_key: image}


def mixup(batch: Batch, rng: np.random.Generator, alpha: float) -> Batch:
  """big_vision's Mixup of a batch: ``images`` [B, S, S, C] blended with their roll by one row in
  the ratio ``max(r, 1 - r)``, ``r ~ Beta(alpha, alpha)``; adds ``mixed_targets`` int32 [B] (the
  rolled labels) and ``mix`` float32 [B] (the ratio, the weight of ``targets``). The ratio is
  at least 1/2, so ``targets`` stays the label accuracy counts."""
  ratio = rng.beta(alpha, alpha)
  ratio = np.float32(max(ratio, 1 - ratio))
  images = batch["images"]
  return {
    **batch,
    "images": ratio * images + (1 - ratio) * np.roll(images, 1, axis=0),
    "mixed_targets": np.roll(batch["targets"], 1, axis=0),
    "mix": np.full(images.shape[:1], ratio, np.float32),
  }


class _ToExample:
  """Record -> ``{'images': float32 [size, size, C], 'targets': int32 [], 'weights': 1.0}``."""

  def __init__(self, image_key: str, label_key: str, options: ImageOptions, crop: bool = True):
    # crop=False: ``_Augment`` has already made each image the model's square.
    self.image_key, self.label_key, self.options, self.crop = image_key, label_key, options, crop
    # (x / 255 - mean) / std as one multiply-add.
    self.scale = 1 / (255 * np.asarray(options.std, np.float64))
    self.shift = -np.asarray(options.mean, np.float64) / np.asarray(options.std, np.float64)

  def __call__(self, record: dict[str, Any]) -> Batch:
    o = self.options
    image = _pixels(record, self.image_key)
    if self.crop:
      image = centre_crop(image, o.size, o.crop_fraction)
    if len(self.scale) not in (1, image.shape[-1]):
      raise ValueError(
        f"config.data.image_mean/image_std give {len(self.scale)} channels, the "
        f"images have {image.shape[-1]}."
      )
    images = (image * self.scale + self.shift).astype(np.float32)
    return {
      "images": images,
      "targets": np.asarray(record[self.label_key] if self.label_key else 0, np.int32),
      "weights": np.float32(1.0),
    }


def caption_ids(tokenizer: Tokenizer, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
  """A caption as a text tower reads it: (int32 ids [length], int32 mask [length]): the
  tokenizer's BOS (if it has one, as CLIP's), the text's ids and EOS, cut to `length` with the
  EOS kept last, then padded (mask 0) with the pad id."""
  bos = getattr(tokenizer, "bos_id", None)
  ids = ([] if bos is None else [bos]) + tokenizer.encode(text).tolist()
  ids = ids[: length - 1] + [tokenizer.eos_id]
  out = np.full((length,), tokenizer.pad_id, np.int32)
  out[: len(ids)] = ids
  mask = np.zeros((length,), np.int32)
  mask[: len(ids)] = 1
  return out, mask


def prompt_ids(
  tokenizer: Tokenizer, class_names: Sequence[str], templates: Sequence[str], length: int
) -> tuple[np.ndarray, np.ndarray]:
  """Zero-shot prompts: every template filled with every class name, as `caption_ids` makes
  captions: (ids int32 [classes, templates, length], mask of the same shape)."""
  rows = [
    [caption_ids(tokenizer, t.format(name), length) for t in templates] for name in class_names
  ]
  ids = np.array([[r[0] for r in row] for row in rows], np.int32)
  mask = np.array([[r[1] for r in row] for row in rows], np.int32)
  return ids, mask


class _ToPair(_ToExample):
  """Record -> ``_ToExample``'s image, ``targets`` (the label; 0 when ``label_key`` is "") and
  ``weights``, plus ``texts`` int32 [length] and ``text_mask`` int32 [length]: the caption."""

  def __init__(
    self,
    image_key: str,
    label_key: str,
    caption_key: str,
    tokenizer: Tokenizer,
    length: int,
    options: ImageOptions,
    crop: bool = True,
  ):
    super().__init__(image_key, label_key, options, crop)
    self.caption_key, self.tokenizer, self.length = caption_key, tokenizer, length

  def __call__(self, record: dict[str, Any]) -> Batch:
    example = super().__call__(record)
    text = record_text(record, self.caption_key, "caption_key")
    example["texts"], example["text_mask"] = caption_ids(self.tokenizer, text, self.length)
    return example


def model_inputs(pixels: np.ndarray, options: ImageOptions) -> np.ndarray:
  """uint8 images `[count, h, w, C]` -> float32 `[count, size, size, C]` as evaluation feeds
  them to a model (centre crop, normalisation)."""
  to_example = _ToExample("image", "", options)
  return np.stack([to_example({"image": image})["images"] for image in pixels])


def make_image_dataset(
  *,
  source: Sequence[dict[str, Any]],
  image_key: str,
  label_key: str,
  options: ImageOptions,
  batch_size: int,
  seed: int,
  train: bool,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  caption_key: str = "",
  tokenizer: Tokenizer | None = None,
  seq_len: int = 0,
) -> grain.IterDataset:
  """Returns a grain dataset of classification batches of the images in ``source`` (with
  ``caption_key``: contrastive batches of the images and their captions).

  Each element (B = ``batch_size``, this process's share of the global batch; S =
  ``options.size``):
    ``images`` float32 [B, S, S, C]: cropped, resized and normalised (module docstring);
    ``targets`` int32 [B]: the labels;
    ``weights`` float32 [B]: 1 per image, 0 on eval padding;
    with ``caption_key``: ``texts`` and ``text_mask`` int32 [B, seq_len], each caption as
    `caption_ids` makes it with ``tokenizer`` (``targets`` are then 0 when ``label_key`` is "").
  Shuffling, shards, eval padding (all-zero rows) and resumable state are those of
  ``iterators.record_batches``; ``options.augment`` applies to training only.
  """
  augments = options.augment != "none" or options.randaugment_layers > 0
  augment = _Augment(image_key, options) if train and augments else None
  mix = None
  if train and options.mixup > 0:
    mix = lambda batch, rng: mixup(batch, rng, options.mixup)  # noqa: E731
  crop = augment is None
  to_example = _ToExample(image_key, label_key, options, crop)
  if caption_key:
    to_example = _ToPair(image_key, label_key, caption_key, tokenizer, seq_len, options, crop)
  return record_batches(
    source,
    to_example,
    augment=augment,
    mix=mix,
    batch_size=batch_size,
    seed=seed,
    train=train,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=worker_count,
  )
