"""TFDS builders of synthetic text tasks, generated locally (nothing is downloaded).

Every record has ``source`` and ``target`` text (for encoder-decoder models), ``text``
(source then target, for decoder-only LMs) and ``index`` (records are read back in
index order, whatever TFDS's write-time shuffle did).

- ``modular_arithmetic``: all pairs ``a, b < p`` of "a op b mod p", as in Power et al.
  2022, "Grokking" (arXiv:2201.02177). Config ``add97`` (the default) is ``+`` with
  p = 97; also ``sub97``, ``mul97`` and ``div97`` (``a * b^-1``, pairs with b > 0).
  Source "12+85=", target "0", text "12+85=0"; index ``a * p + b``. A fixed seeded
  half of the pairs is ``train``, the other half ``validation``. Config ``add113_30`` is
  Nanda et al. 2023's "Progress measures for grokking" (arXiv:2301.05217): ``+`` mod 113,
  30% of the pairs for training, in their format without the operator: source "12 85=".
- ``copy_strings`` / ``reverse_strings``: random lowercase strings of 1 to 32
  letters; target is the source (copy) or the source reversed. ``text`` is
  ``source + "=" + target``, so a decoder-only LM sees where the input ends.
  5,000 train and 500 validation records, each split from its own fixed seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

_OPS = {
  "add": ("+", lambda a, b, p: (a + b) % p),
  "sub": ("-", lambda a, b, p: (a - b) % p),
  "mul": ("*", lambda a, b, p: (a * b) % p),
  "div": ("/", lambda a, b, p: (a * pow(int(b), -1, p)) % p),
}
_FEATURES = {
  "source": tfds.features.Text(),
  "target": tfds.features.Text(),
  "text": tfds.features.Text(),
  "index": np.int64,
}


def modular_pairs(op: str, p: int) -> list[tuple[int, int]]:
  """All (a, b) of the task, in index order (division leaves out b = 0)."""
  return [(a, b) for a in range(p) for b in range(p) if not (op == "div" and b == 0)]


def modular_split(op: str, p: int, train_fraction: float, seed: int) -> set[tuple[int, int]]:
  """The train pairs: a seeded random ``train_fraction`` of ``modular_pairs``."""
  pairs = modular_pairs(op, p)
  order = np.random.default_rng(seed).permutation(len(pairs))
  return {pairs[i] for i in order[: int(round(train_fraction * len(pairs)))]}


@dataclasses.dataclass
class ModularConfig(tfds.core.BuilderConfig):
  op: str = "add"  # A key of _OPS.
  p: int = 97  # The modulus (a prime, so that division is defined).
  train_fraction: float = 0.5
  seed: int = 0  # Seeds which pairs are train.
  show_op: bool = True  # Source "12+85="; False: "12 85=" (Nanda et al.'s [a, b, =]).


class ModularArithmetic(tfds.core.GeneratorBasedBuilder):
  """All equations ``a op b = c (mod p)``, half of them for training (the grokking task)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [ModularConfig(name=f"{op}97", op=op) for op in _OPS] + [
    ModularConfig(name="add113_30", op="add", p=113, train_fraction=0.3, show_op=False)
  ]
  code_path = epath.Path(__file__)  # TFDS's own lookup needs importlib_resources.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self, description=__doc__, features=tfds.features.FeaturesDict(_FEATURES)
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    train = modular_split(c.op, c.p, c.train_fraction, c.seed)
    return {
      "train": self._generate_examples(train, True),
      "validation": self._generate_examples(train, False),
    }

  def _generate_examples(
    self, train: set[tuple[int, int]], keep: bool
  ) -> Iterator[tuple[int, dict]]:
    c = self.builder_config
    symbol, fn = _OPS[c.op]
    for a, b in modular_pairs(c.op, c.p):
      if ((a, b) in train) == keep:
        source, target = f"{a}{symbol if c.show_op else ' '}{b}=", str(fn(a, b, c.p))
        yield (
          a * c.p + b,
          {"source": source, "target": target, "text": source + target, "index": a * c.p + b},
        )


def random_strings(n: int, seed: int, max_len: int = 32) -> list[str]:
  """``n`` seeded strings of 1 to ``max_len`` lowercase letters."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, max_len + 1, size=n)
  return ["".join(chr(97 + x) for x in rng.integers(0, 26, size=k)) for k in lengths]


class _StringTask(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Random strings -> a function of them; subclasses set ``transform``."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPLITS = {"train": (5000, 1), "validation": (500, 2)}  # split: (records, seed).
  code_path = epath.Path(__file__)

  @staticmethod
  def transform(s: str) -> str:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self, description=__doc__, features=tfds.features.FeaturesDict(_FEATURES)
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    return {
      split: self._generate_examples(random_strings(n, seed))
      for split, (n, seed) in self.SPLITS.items()
    }

  def _generate_examples(self, strings: list[str]) -> Iterator[tuple[int, dict]]:
    for i, source in enumerate(strings):
      target = self.transform(source)
      yield i, {"source": source, "target": target, "text": f"{source}={target}", "index": i}


class CopyStrings(_StringTask):
  """Random strings; the target repeats the source."""

  @staticmethod
  def transform(s: str) -> str:
    return s


class ReverseStrings(_StringTask):
  """Random strings; the target is the source reversed."""

  @staticmethod
  def transform(s: str) -> str:
    return s[::-1]
