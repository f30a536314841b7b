"""RandAugment (Cubuk et al. 2020) on uint8 images, as big_vision's ``randaug(N, M)`` applies it.

The policy is that of the TPU EfficientNet code big_vision uses: ``num_layers`` times, one of the
16 operations in ``OPS`` is picked uniformly and applied with a probability drawn from
U(0.2, 0.8); every operation takes the one shared ``magnitude`` (0 to 10; ViT's plain baseline
uses 2 layers at 10). Geometric operations fill uncovered pixels with grey (128), and rotations,
shears and translations go either way with equal odds. The pixel operations are PIL's
(``ImageOps``, ``ImageEnhance``, affine ``transform`` with nearest-neighbour sampling).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

GREY = 128
MAX_LEVEL = 10.0
TRANSLATE_PIXELS = 100  # At magnitude 10 (the TPU code's translate_const).
CUTOUT_PIXELS = 40  # Half the side of the grey square at magnitude 10 (cutout_const).


def _signed(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() < 0.5 else value


def _fill(image: Image.Image) -> int | tuple[int, ...]:
  return GREY if image.mode == "L" else (GREY,) * len(image.getbands())


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
  """PIL's affine map (output pixel (x, y) reads input (a x + b y + c, d x + e y + f))."""
  return image.transform(image.size, Image.Transform.AFFINE, matrix, fillcolor=_fill(image))


def _solarize_add(image: Image.Image, addition: int) -> Image.Image:
  """Adds ``addition`` (clipped to 255) to the pixels under 128; the others stay."""
  x = np.asarray(image).astype(np.int32)
  out = np.where(x < 128, np.clip(x + addition, 0, 255), x)
  return Image.fromarray(out.astype(np.uint8), image.mode)


def _cutout(image: Image.Image, half: int, rng: np.random.Generator) -> Image.Image:
  """A grey square of side up to ``2 * half`` centred on a random pixel (clipped at the edges)."""
  x = np.array(image)
  h, w = x.shape[:2]
  cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
  x[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = GREY
  return Image.fromarray(x, image.mode)


def _enhance(kind: type) -> Callable:
  # The four ImageEnhance factors run from 0.1 (magnitude 0) to 1.9 (magnitude 10).
  return lambda image, level, rng: kind(image).enhance(level / MAX_LEVEL * 1.8 + 0.1)


# name -> (image, magnitude, rng) -> image.
OPS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
  "AutoContrast": lambda image, level, rng: ImageOps.autocontrast(image),
  "Equalize": lambda image, level, rng: ImageOps.equalize(image),
  "Invert": lambda image, level, rng: ImageOps.invert(image),
  "Rotate": lambda image, level, rng: image.rotate(
    _signed(level / MAX_LEVEL * 30, rng), fillcolor=_fill(image)
  ),
  "Posterize": lambda image, level, rng: ImageOps.posterize(image, int(level / MAX_LEVEL * 4)),
  "Solarize": lambda image, level, rng: ImageOps.solarize(image, int(level / MAX_LEVEL * 256)),
  "Color": _enhance(ImageEnhance.Color),
  "Contrast": _enhance(ImageEnhance.Contrast),
  "Brightness": _enhance(ImageEnhance.Brightness),
  "Sharpness": _enhance(ImageEnhance.Sharpness),
  "ShearX": lambda image, level, rng: _affine(
    image, (1, _signed(level / MAX_LEVEL * 0.3, rng), 0, 0, 1, 0)
  ),
  "ShearY": lambda image, level, rng: _affine(
    image, (1, 0, 0, _signed(level / MAX_LEVEL * 0.3, rng), 1, 0)
  ),
  "TranslateX": lambda image, level, rng: _affine(
    image, (1, 0, _signed(round(level / MAX_LEVEL * TRANSLATE_PIXELS), rng), 0, 1, 0)
  ),
  "TranslateY": lambda image, level, rng: _affine(
    image, (1, 0, 0, 0, 1, _signed(round(level / MAX_LEVEL * TRANSLATE_PIXELS), rng))
  ),
  "Cutout": lambda image, level, rng: _cutout(image, int(level / MAX_LEVEL * CUTOUT_PIXELS), rng),
  "SolarizeAdd": lambda image, level, rng: _solarize_add(image, int(level / MAX_LEVEL * 110)),
}


def rand_augment(
  image: np.ndarray, rng: np.random.Generator, num_layers: int = 2, magnitude: float = 10
) -> np.ndarray:
  """uint8 [H, W, C] (C = 1 or 3) -> uint8 [H, W, C], ``num_layers`` random operations."""
  if not 0 <= magnitude <= MAX_LEVEL:
    raise ValueError(f"config.data.randaugment_magnitude={magnitude} must be in [0, 10].")
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  names = list(OPS)
  for _ in range(num_layers):
    name = names[int(rng.integers(len(names)))]
    if rng.random() < rng.uniform(0.2, 0.8):
      pil = OPS[name](pil, magnitude, rng)
  return np.asarray(pil).reshape(image.shape)
