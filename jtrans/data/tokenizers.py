"""Tokenizers: text <-> int32 token ids.

Every tokenizer exposes ``vocab_size``, ``pad_id``, ``eos_id``, ``encode`` and
``decode`` (the ``Tokenizer`` protocol), so SentencePiece/BPE tokenizers can be
added to ``_REGISTRY`` later without touching the data pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Tokenizer(Protocol):
  """What the data pipeline needs from a tokenizer."""

  vocab_size: int
  pad_id: int
  eos_id: int

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids of shape [num_tokens]; no EOS appended."""
    ...

  def decode(self, ids: npt.ArrayLike) -> str:
    """Maps ids of any shape (flattened) back to text, dropping special ids."""
    ...


class ByteTokenizer:
  """UTF-8 bytes with ByT5's ids: pad=0, eos=1, unk=2, byte b -> b + 3."""

  pad_id: int = 0
  eos_id: int = 1
  unk_id: int = 2
  offset: int = 3
  vocab_size: int = 256 + 3

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids of shape [len(text.encode('utf-8'))]."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return raw.astype(np.int32) + self.offset

  def decode(self, ids: npt.ArrayLike) -> str:
    """Drops pad/eos/unk (and out-of-range ids); invalid UTF-8 becomes U+FFFD."""
    flat = np.asarray(ids).reshape(-1)
    flat = flat[(flat >= self.offset) & (flat < self.vocab_size)]
    return bytes((flat - self.offset).astype(np.uint8)).decode("utf-8", errors="replace")


_REGISTRY: dict[str, Callable[[], Tokenizer]] = {"byte": ByteTokenizer}


def get_tokenizer(name: str) -> Tokenizer:
  """Returns the tokenizer named by ``config.data.tokenizer``."""
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown tokenizer {name!r} in config.data.tokenizer; accepted names: "
        f"{sorted(_REGISTRY)}."
    )
  return _REGISTRY[name]()
