"""The tokenizer of a Hugging Face model directory, giving the ids `AutoTokenizer` gives.

`config.data.tokenizer = "hf"` with `tokenizer_path = <directory>` (what `configs/hf.py` and
`--mode=generate --hf_dir=` set). The kind is identified by the files, in this order:

- `tokenizer.json`: the `tokenizers` serialization that every fast tokenizer saves (GPT-2's
  byte-level BPE, Llama's SentencePiece-derived BPE, BERT's WordPiece, T5's Unigram, ...). The
  same library loads it, so normalisation, pre-tokenisation and ids are those of transformers.
- `source.spm` + `target.spm` + `vocab.json`: Marian. Sources are cut into pieces by
  `source.spm`, outputs are joined by `target.spm`, and `vocab.json` maps pieces to ids (what
  MarianTokenizer does; it has no fast version).
- `vocab.json` + `merges.txt`: GPT-2's BPE without a tokenizer.json (`Gpt2BpeTokenizer`).
- `vocab.txt`: BERT's WordPiece, built by `tokenizers`' own `BertWordPieceTokenizer` with
  `tokenizer_config.json`'s `do_lower_case`.

Special tokens (bos, eos, pad, unk, mask, sep, cls) come from `tokenizer_config.json`, else
`special_tokens_map.json`. `encode` returns the text's ids without special tokens; the
pipelines add the separators they need (`eos_id`: the eos token, or BERT's `[SEP]`).
A directory with none of these files fails, naming the files looked for.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from etils import epath

from jtrans import storage

SPECIAL = ("bos", "eos", "pad", "unk", "mask", "sep", "cls")
LOOKED_FOR = (
  "tokenizer.json",
  "source.spm + target.spm + vocab.json (Marian)",
  "vocab.json + merges.txt (GPT-2 BPE)",
  "vocab.txt (BERT WordPiece)",
)


def special_tokens(root: epath.Path) -> dict[str, str]:
  """{"eos": "</s>", ...}: the special tokens the directory's tokenizer files name."""
  found: dict[str, str] = {}
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    if (root / name).is_file():
      for key, value in json.loads((root / name).read_text()).items():
        kind = key.removesuffix("_token")
        if key.endswith("_token") and kind in SPECIAL and value:
          found.setdefault(kind, value["content"] if isinstance(value, dict) else value)
  return found


def _config(root: epath.Path) -> dict[str, Any]:
  path = root / "tokenizer_config.json"
  return json.loads(path.read_text()) if path.is_file() else {}


class HfTokenizer:
  """A Hugging Face directory's tokenizer (see the module docstring for the kinds)."""

  def __init__(self, directory: str):
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top

    self.path = directory
    root = storage.path(directory)
    tokens = special_tokens(root)
    settings = _config(root)
    self._marian = None
    if (root / "tokenizer.json").is_file():
      self.kind = "tokenizer.json"
      self._tok = Tokenizer.from_str((root / "tokenizer.json").read_text())
    elif all((root / f).is_file() for f in ("source.spm", "target.spm", "vocab.json")):
      self.kind = "marian"
      self._marian = _Marian(root)
      tokens = {"eos": "</s>", "unk": "<unk>", "pad": "<pad>", **tokens}
    elif all((root / f).is_file() for f in ("vocab.json", "merges.txt")):
      from jtrans.data import tokenizers  # pylint: disable=g-import-not-at-top

      self.kind = "vocab.json + merges.txt"
      self._tok = tokenizers.Gpt2BpeTokenizer(directory).backend
      tokens = {"eos": tokenizers.GPT2_EOS, **tokens}
    elif (root / "vocab.txt").is_file():
      from tokenizers.implementations import BertWordPieceTokenizer  # pylint: disable=g-import-not-at-top

      self.kind = "vocab.txt"
      vocab = {t: i for i, t in enumerate((root / "vocab.txt").read_text().splitlines())}
      self._tok = BertWordPieceTokenizer(
        vocab,
        lowercase=settings.get("do_lower_case", True),
        strip_accents=settings.get("strip_accents"),
      )._tokenizer
      tokens = {
        "unk": "[UNK]",
        "sep": "[SEP]",
        "pad": "[PAD]",
        "cls": "[CLS]",
        "mask": "[MASK]",
        **tokens,
      }
    else:
      raise FileNotFoundError(
        f"{directory} (config.data.tokenizer_path): no tokenizer found; looked for "
        f"{', '.join(LOOKED_FOR)}. Copy the model's tokenizer files there, or set "
        "--config.data.tokenizer=byte (or sentencepiece) to train with another tokenizer."
      )
    self.ids = {
      kind: i for kind, token in tokens.items() if (i := self._token_id(token)) is not None
    }
    eos = self.ids.get("eos", self.ids.get("sep"))
    if eos is None:
      raise ValueError(
        f"{directory}: its tokenizer names no eos (or sep) token in "
        "tokenizer_config.json; the pipelines need one to end documents."
      )
    self.eos_id = eos
    self.tokens = {kind: tokens[kind] for kind in self.ids}  # Their texts (chat templates').
    self.pad_id = self.ids.get("pad", eos)  # GPT-2 has none: padding has weight 0 anyway.
    self.bos_id = self.ids.get("bos")
    self.mask_id = self.ids.get("mask")
    self.vocab_size = (
      self._marian.vocab_size if self._marian else self._tok.get_vocab_size(with_added_tokens=True)
    )

  def _token_id(self, token: str) -> int | None:
    return self._marian.vocab.get(token) if self._marian else self._tok.token_to_id(token)

  def encode(self, text: str) -> np.ndarray:
    """int32 ids [num_tokens] of `text`, without special tokens."""
    if self._marian:
      return self._marian.encode(text)
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def token_bytes(self) -> np.ndarray | None:
    """`tokenizers.token_bytes` of the directory's vocabulary (None for Marian's)."""
    if self._marian:
      return None
    from jtrans.data import tokenizers  # pylint: disable=g-import-not-at-top

    return tokenizers.backend_token_bytes(self._tok, list(self.ids.values()))

  def decode(self, ids: npt.ArrayLike) -> str:
    """Text of ids of any shape (flattened), without special tokens or ids past the vocabulary."""
    flat = np.asarray(ids).reshape(-1)
    flat = flat[(flat >= 0) & (flat < self.vocab_size)].tolist()
    if self._marian:
      return self._marian.decode(flat, set(self.ids.values()))
    return self._tok.decode(flat, skip_special_tokens=True)


class _Marian:
  """Marian's two SentencePiece models and shared vocabulary (`vocab.json`: piece -> id)."""

  def __init__(self, root: epath.Path):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self.source = spm.SentencePieceProcessor(model_proto=(root / "source.spm").read_bytes())
    self.target = spm.SentencePieceProcessor(model_proto=(root / "target.spm").read_bytes())
    self.vocab: dict[str, int] = json.loads((root / "vocab.json").read_text())
    self.pieces = {i: piece for piece, i in self.vocab.items()}
    self.vocab_size = max(self.vocab.values()) + 1
    self.unk_id = self.vocab.get("<unk>", 1)

  def encode(self, text: str) -> np.ndarray:
    pieces = self.source.encode(text, out_type=str)
    return np.asarray([self.vocab.get(p, self.unk_id) for p in pieces], np.int32)

  def decode(self, ids: list[int], special: set[int]) -> str:
    """Pieces joined by the target model; a piece it lacks keeps its "▁", read as a space."""
    pieces = [self.pieces[i] for i in ids if i not in special and i in self.pieces]
    return self.target.decode_pieces(pieces).replace("\u2581", " ").strip()
