"""Tokenizers: text <-> int32 token ids.

Every tokenizer exposes ``vocab_size``, ``pad_id``, ``eos_id``, ``encode`` and
``decode`` (the ``Tokenizer`` protocol); the pipelines need nothing else. Three kinds,
picked by ``config.data.tokenizer`` and built by ``from_config``:

- ``byte``: UTF-8 bytes with ByT5's ids (the default; needs no file).
- ``sentencepiece``: a SentencePiece ``.model`` at ``config.data.tokenizer_path``, or,
  with no path, one trained on the train split and cached next to the data
  (``train_tokenizer.py``). Ids follow T5: pad 0, eos 1, unk 2.
- ``hf``: a Hugging Face model directory's own tokenizer (``hf_tokenizer.py``: GPT-2,
  Llama, BERT, T5, Marian), with the ids ``AutoTokenizer`` gives.
- ``word``: whole words and punctuation marks as tokens (the ``tokenizers`` package's
  WordLevel model behind its Whitespace pre-tokenizer: ``\\w+|[^\\w\\s]+``), from a
  ``tokenizer.json`` at ``tokenizer_path`` or, with no path, a vocabulary of the train
  split's words made and cached like SentencePiece's (``train_tokenizer.py``): the
  vocabulary of symbolic tasks (grokking's numbers mod p are one token each). Ids: pad 0,
  eos 1, unk 2; ``decode`` joins tokens with spaces.
- ``gpt2_bpe``: GPT-2's byte-level BPE from ``tokenizer.json`` or ``vocab.json`` +
  ``merges.txt``. GPT-2 has no pad token, so ``pad_id = eos_id`` (``<|endoftext|>``):
  padding always carries weight 0 (and mask 0), so the id it holds never matters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

import ml_collections
import numpy as np
import numpy.typing as npt
from etils import epath

from jtrans import storage

KINDS = ("byte", "sentencepiece", "word", "gpt2_bpe", "hf")
WORD_SPECIALS = ("<pad>", "</s>", "<unk>")  # Ids 0, 1, 2 of a word-level vocabulary.
GPT2_EOS = "<|endoftext|>"


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

  def token_bytes(self) -> np.ndarray:
    """One byte per id; eos and unk count one, pad none (see `token_bytes`)."""
    table = np.ones(self.vocab_size, np.int32)
    table[self.pad_id] = 0
    return table

  def decode(self, ids: npt.ArrayLike) -> str:
    """Drops pad/eos/unk (and out-of-range ids); invalid UTF-8 becomes U+FFFD."""
    flat = np.asarray(ids).reshape(-1)
    flat = flat[(flat >= self.offset) & (flat < self.vocab_size)]
    return bytes((flat - self.offset).astype(np.uint8)).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
  """A SentencePiece model; ``train_tokenizer.train_sentencepiece`` makes ones with T5's ids."""

  def __init__(self, path: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self.path = path
    self._sp = spm.SentencePieceProcessor(model_proto=storage.path(path).read_bytes())
    self.vocab_size = self._sp.vocab_size()
    self.pad_id, self.eos_id = self._sp.pad_id(), self._sp.eos_id()
    if self.pad_id < 0 or self.eos_id < 0:
      raise ValueError(
        f"SentencePiece model {path} (config.data.tokenizer_path) has no pad or "
        "eos piece; train one with pad_id=0, eos_id=1 (python -m "
        "jtrans.data.train_tokenizer does)."
      )

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids of shape [num_pieces]."""
    return np.asarray(self._sp.encode(text), np.int32).reshape(-1)

  def token_bytes(self) -> np.ndarray:
    """Each piece's bytes (`piece_bytes`); control and unknown pieces count one."""
    sp = self._sp
    return np.array(
      [
        1
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)
        else piece_bytes(sp.id_to_piece(i), byte_level=False)
        for i in range(self.vocab_size)
      ],
      np.int32,
    )

  def decode(self, ids: npt.ArrayLike) -> str:
    """Drops pad/eos and ids past the vocabulary (a model's padded embedding rows)."""
    flat = np.asarray(ids).reshape(-1)
    keep = (flat >= 0) & (flat < self.vocab_size) & (flat != self.pad_id) & (flat != self.eos_id)
    return self._sp.decode(flat[keep].tolist())


class WordTokenizer:
  """Word-level ids from a ``tokenizers`` WordLevel ``tokenizer.json`` whose first ids are
  ``WORD_SPECIALS`` (``train_tokenizer.train_word_level`` makes one)."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer as HfTokenizer  # pylint: disable=g-import-not-at-top

    self.path = path
    self._tok = HfTokenizer.from_str(storage.path(path).read_text())
    specials = [self._tok.token_to_id(t) for t in WORD_SPECIALS]
    if specials != [0, 1, 2]:
      raise ValueError(
        f"The word-level tokenizer {path} (config.data.tokenizer_path) maps {WORD_SPECIALS} "
        f"to {specials}, not to 0, 1, 2; make it with python -m jtrans.data.train_tokenizer "
        "--config.data.tokenizer=word, or set the path to '' to make one from the train split."
      )
    self.pad_id, self.eos_id = 0, 1
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids of shape [num_words]; unknown words are unk (2)."""
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def token_bytes(self) -> np.ndarray:
    """A word's bytes plus the space that `decode` puts between words; specials count one."""
    table = np.ones(self.vocab_size, np.int32)
    for word, i in self._tok.get_vocab(with_added_tokens=True).items():
      if i > 2:
        table[i] = len(word.encode("utf-8")) + 1
    return table

  def decode(self, ids: npt.ArrayLike) -> str:
    """The words, space-separated; special ids and ids past the vocabulary are dropped."""
    flat = np.asarray(ids).reshape(-1)
    flat = flat[(flat > 2) & (flat < self.vocab_size)]
    return self._tok.decode(flat.tolist(), skip_special_tokens=True)


class Gpt2BpeTokenizer:
  """GPT-2's byte-level BPE (the ``tokenizers`` package); ids equal Hugging Face's GPT2TokenizerFast."""

  def __init__(self, path: str):
    from tokenizers import AddedToken, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top  # pylint: disable=g-import-not-at-top
    from tokenizers import Tokenizer as HfTokenizer

    self.path = path
    files = _gpt2_files(path)
    if len(files) == 1:
      self._tok = HfTokenizer.from_str(files[0].read_text())
    else:
      # What GPT2TokenizerFast builds from vocab.json + merges.txt.
      vocab = json.loads(files[0].read_text())
      merges = [
        tuple(line.split(" "))
        for line in files[1].read_text().splitlines()
        if line and not line.startswith("#version")
      ]
      self._tok = HfTokenizer(
        models.BPE(
          vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
        )
      )
      self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
      self._tok.decoder = decoders.ByteLevel()
      self._tok.add_special_tokens([AddedToken(GPT2_EOS, special=True)])
    eos = self._tok.token_to_id(GPT2_EOS)
    if eos is None:
      raise ValueError(
        f"The BPE vocabulary at {path} (config.data.tokenizer_path) has no "
        f"{GPT2_EOS!r} token; use GPT-2's files or add it as a special token."
      )
    self.eos_id = self.pad_id = eos
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def backend(self):
    """The `tokenizers.Tokenizer` itself (hf_tokenizer.py wraps it with a directory's specials)."""
    return self._tok

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids of shape [num_tokens]."""
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids: npt.ArrayLike) -> str:
    """Drops special ids and ids past the vocabulary (GPT-2 pads its 50257 rows to 50304)."""
    flat = np.asarray(ids).reshape(-1)
    flat = flat[(flat >= 0) & (flat < self.vocab_size)]
    return self._tok.decode(flat.tolist(), skip_special_tokens=True)


SPIECE_SPACE = "\u2581"  # SentencePiece's word-start mark: a space in the text.


def piece_bytes(piece: str, byte_level: bool) -> int:
  """UTF-8 bytes of the text a vocabulary entry stands for: one per character of a byte-level
  BPE token (GPT-2's alphabet maps each byte to one character); 1 for a byte-fallback piece
  `<0xNN>`; else the piece's own bytes, with SentencePiece's word mark as a space and
  WordPiece's continuation mark `##` dropped."""
  if byte_level:
    return len(piece)
  if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
    return 1
  return len(piece.removeprefix("##").replace(SPIECE_SPACE, " ").encode("utf-8"))


def backend_token_bytes(backend, special_ids: Sequence[int]) -> np.ndarray:
  """`token_bytes` of a `tokenizers.Tokenizer` (byte-level when its decoder is ByteLevel)."""
  decoder = json.loads(backend.to_str()).get("decoder") or {}
  kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
  byte_level = "ByteLevel" in kinds
  vocab = backend.get_vocab(with_added_tokens=True)
  table = np.zeros(backend.get_vocab_size(with_added_tokens=True), np.int32)
  for piece, i in vocab.items():
    table[i] = piece_bytes(piece, byte_level)
  table[list(special_ids)] = 1
  return table


def token_bytes(tokenizer: Tokenizer) -> np.ndarray | None:
  """int32 `[vocab_size]`: the UTF-8 bytes of text each id stands for, so that bits per byte
  = summed nll / (ln 2 x summed bytes of the targets), comparable across tokenizers. Special
  ids (EOS, unk) count 1 byte, the separator they stand for; pad counts 0 (it has weight 0).
  None for a tokenizer without a readable vocabulary (Marian's two SentencePiece models)."""
  if isinstance(tokenizer, Gpt2BpeTokenizer):
    table = backend_token_bytes(tokenizer.backend, [tokenizer.eos_id])
  elif hasattr(tokenizer, "token_bytes"):
    table = tokenizer.token_bytes()
  else:
    table = None
  if table is None:
    return None
  table = np.asarray(table, np.int32)
  if tokenizer.pad_id != tokenizer.eos_id:  # GPT-2 pads with EOS, which still counts.
    table[tokenizer.pad_id] = 0
  return table


def _gpt2_files(path: str) -> list[epath.Path]:
  """[tokenizer.json] or [vocab.json, merges.txt] for a file or directory ``path``."""
  root = storage.path(path)
  if root.is_file():
    return [root]
  json_file = root / "tokenizer.json"
  pair = [root / "vocab.json", root / "merges.txt"]
  if json_file.is_file():
    return [json_file]
  if all(f.is_file() for f in pair):
    return pair
  raise FileNotFoundError(
    f"No GPT-2 BPE files at {path!r} (config.data.tokenizer_path): expected a tokenizer.json "
    f"file, or a directory holding tokenizer.json or vocab.json + merges.txt (e.g. those of "
    "huggingface.co/openai-community/gpt2)."
  )


def get_tokenizer(name: str) -> Tokenizer:
  """The tokenizer named by ``config.data.tokenizer``, for kinds that need no file ("byte")."""
  if name == "byte":
    return ByteTokenizer()
  if name in KINDS:
    raise ValueError(
      f"config.data.tokenizer={name!r} needs files: build it with "
      "tokenizers.from_config(config.data)."
    )
  raise ValueError(
    f"Unknown tokenizer {name!r} in config.data.tokenizer; accepted names: {sorted(KINDS)}."
  )


def from_config(
  data: ml_collections.ConfigDict,
  train_if_missing: bool = True,
  text_keys: Sequence[str] | None = None,
) -> Tokenizer:
  """The tokenizer that ``config.data`` describes (keys ``tokenizer``, ``tokenizer_path``, ...).

  SentencePiece (or word) with an empty ``tokenizer_path`` loads the model cached for this data
  set, split, fields and vocabulary size, training it first on the records' ``text_keys``
  (default: ``config.data.text_key``; ``sources.text_keys(config)`` gives both sides of a
  seq2seq pair) when it is missing and ``train_if_missing`` (pass False where several
  processes would race to write it).
  """
  kind, path = data.tokenizer, data.tokenizer_path
  if kind == "byte":
    return ByteTokenizer()
  if kind == "gpt2_bpe":
    if not path:
      raise ValueError(
        "config.data.tokenizer='gpt2_bpe' needs config.data.tokenizer_path: a "
        "directory with GPT-2's vocab.json + merges.txt, or a tokenizer.json."
      )
    return Gpt2BpeTokenizer(path)
  if kind == "hf":
    if not path:
      raise ValueError(
        "config.data.tokenizer='hf' needs config.data.tokenizer_path: a Hugging "
        "Face model directory with its tokenizer files."
      )
    from jtrans.data import hf_tokenizer  # pylint: disable=g-import-not-at-top

    return hf_tokenizer.HfTokenizer(path)
  if kind == "word":
    from jtrans.data import train_tokenizer  # pylint: disable=g-import-not-at-top

    if path and not storage.path(path).is_file():
      raise FileNotFoundError(
        f"Word-level tokenizer {path!r} (config.data.tokenizer_path) does not exist; fix the "
        "path, or set it to '' to make one from the train split's words."
      )
    keys = tuple(text_keys) if text_keys else (data.text_key,)
    return WordTokenizer(path or train_tokenizer.cached_tokenizer(data, train_if_missing, keys))
  if kind == "sentencepiece":
    if path:
      if not storage.path(path).is_file():
        raise FileNotFoundError(
          f"SentencePiece model {path!r} (config.data.tokenizer_path) does "
          "not exist; fix the path, or set it to '' to train one on the "
          "train split."
        )
      return SentencePieceTokenizer(path)
    from jtrans.data import train_tokenizer  # pylint: disable=g-import-not-at-top

    keys = tuple(text_keys) if text_keys else (data.text_key,)
    return SentencePieceTokenizer(train_tokenizer.cached_tokenizer(data, train_if_missing, keys))
  return get_tokenizer(kind)  # Raises, naming the accepted kinds.
