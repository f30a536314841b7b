"""Small stand-ins for the TFDS data sets the configs name, written by TFDS's own builders.

`write` prepares data set `name` in a data_dir as `tfds build` would (its registered builder,
version, builder config, feature spec and encoders; array_record files and dataset_info.json),
with a few records of our own in place of the download. jtrans then finds and reads it by name,
as it reads a set prepared on GCS: nothing in jtrans knows it is a stand-in.
"""

from __future__ import annotations

import io
import types

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jtrans.data import pydoc_corpus, sources

# Each set's splits as TFDS prepares them (the catalog at tensorflow.org/datasets/catalog).
SPLITS = {
  "lm1b": ("train", "test"),
  "wmt14_translate/de-en": ("train", "validation", "test"),
  "c4/en": ("train", "validation"),
  "imagenet2012": ("train", "validation", "test"),
}


def write(name: str, data_dir: str, splits: dict[str, list[dict]]) -> tfds.core.DatasetBuilder:
  """Prepares `name` in `data_dir` with `splits` ({split: records}) as its only records."""
  assert set(splits) == set(SPLITS[name]), f"{name}'s splits are {SPLITS[name]}"
  sources._import_tfds_builders()  # pylint: disable=protected-access
  builder = tfds.builder(name, data_dir=data_dir, file_format=sources.FILE_FORMAT)
  # No downloads: the records below replace what `_split_generators` would fetch.
  builder._make_download_manager = lambda **_: types.SimpleNamespace(downloaded_size=0)
  builder._split_generators = lambda _: {
    split: ((f"{split}-{i}", record) for i, record in enumerate(records))
    for split, records in splits.items()
  }
  builder.download_and_prepare(file_format=sources.FILE_FORMAT)
  return builder


def sentences(count: int, seed: int) -> list[str]:
  """`count` lines of English prose from the embedded corpus, seeded."""
  lines = [
    line.strip()
    for text in pydoc_corpus.load_topics().values()
    for line in text.split("\n")
    if len(line.split()) >= 6
  ]
  pick = np.random.default_rng(seed).choice(len(lines), count, replace=False)
  return [lines[i] for i in pick]


def jpeg(height: int, width: int, rng: np.random.Generator) -> bytes:
  """A smooth random RGB picture (blurred noise, so JPEG keeps it), JPEG-encoded."""
  small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
  image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=90)
  return out.getvalue()


def lm1b(data_dir: str) -> None:
  write(
    "lm1b",
    data_dir,
    {
      "train": [{"text": s} for s in sentences(200, 0)],
      "test": [{"text": s} for s in sentences(40, 1)],
    },
  )


def c4(data_dir: str) -> None:
  def docs(n, seed):
    text = sentences(4 * n, seed)
    return [
      {
        "text": "\n".join(text[4 * i : 4 * i + 4]),
        "url": f"https://example.com/{seed}/{i}",
        "timestamp": "2019-04-25T12:00:00Z",
        "content-length": "512",
        "content-type": "text/plain",
      }
      for i in range(n)
    ]

  write("c4/en", data_dir, {"train": docs(60, 0), "validation": docs(10, 1)})


def german(english: str) -> str:
  """A stand-in German side: the same words, each reversed (a vocabulary of its own)."""
  return " ".join(word[::-1] for word in english.split())


def wmt14(data_dir: str) -> None:
  def pairs(n, seed):
    return [{"en": s, "de": german(s)} for s in sentences(n, seed)]

  write(
    "wmt14_translate/de-en",
    data_dir,
    {"train": pairs(200, 0), "validation": pairs(20, 1), "test": pairs(20, 2)},
  )


def imagenet2012(data_dir: str) -> None:
  """JPEGs of varied sizes and aspect ratios, labels over all 1000 classes."""
  rng = np.random.default_rng(0)

  def images(n, labelled=True):
    return [
      {
        "image": jpeg(int(rng.integers(24, 80)), int(rng.integers(24, 80)), rng),
        "label": int(rng.integers(1000)) if labelled else -1,
        "file_name": f"n{i:08d}.JPEG",
      }
      for i in range(n)
    ]

  write(
    "imagenet2012",
    data_dir,
    {"train": images(24), "validation": images(12), "test": images(4, labelled=False)},
  )
