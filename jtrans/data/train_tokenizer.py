"""Trains a SentencePiece (or word-level) tokenizer on the configured train split and caches it
next to the data.

  python -m jtrans.data.train_tokenizer --config=configs/lm.py:tiny \\
      --config.data.tokenizer=sentencepiece --config.data.tokenizer_vocab_size=8000

writes ``<data_dir>/jtrans_tokenizers/<data set>_<split>_sp<vocab>.model`` (data_dir ""
= TFDS's default data dir; fields other than ``text`` join the name, e.g. ``_en+de`` for a
translation set, whose model trains on both sides), the file that ``tokenizers.from_config`` loads when
``config.data.tokenizer_path`` is "" (training it there on demand if it is missing).
Run this first when training with several processes, so that they do not race to
write it. With a ``tokenizer_path`` set, the model is written there instead.

The model keeps text exactly: no normalization, whitespace kept, and characters
outside the vocabulary fall back to UTF-8 byte pieces, so ``decode(encode(t)) == t``.
Ids follow T5: pad 0, eos 1, unk 2, no bos.

With ``--config.data.tokenizer=word`` it writes ``..._word<vocab>.json`` instead: a
``tokenizers`` WordLevel vocabulary of the split's words and punctuation marks, most frequent
first (ties in character order), at most ``tokenizer_vocab_size`` entries with the same three
special ids; other words encode as unk.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence

import ml_collections
import numpy as np
from absl import app, flags
from tensorflow_datasets.core import constants

from jtrans import storage
from jtrans.data import sources

MAX_TRAINING_CHARS = 50_000_000  # A seeded sample of documents up to this size trains the model.


def cache_path(data: ml_collections.ConfigDict, keys: Sequence[str] = ("text",)) -> str:
  """Where the SentencePiece model trained for ``config.data`` on fields ``keys`` is cached."""
  if data.name == sources.FILES:
    key = f"{data.train_files}|{data.file_format}|{data.text_key}"
    dataset = f"files-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
  else:
    dataset = data.name.replace("/", "-")
  fields = "" if tuple(keys) == ("text",) else "_" + "+".join(keys)
  kind = "word" if data.tokenizer == "word" else "sp"
  suffix = ".json" if kind == "word" else ".model"
  root = storage.path(data.data_dir or constants.get_default_data_dir())
  return os.fspath(
    root
    / "jtrans_tokenizers"
    / f"{dataset}_{data.train_split}{fields}_{kind}{data.tokenizer_vocab_size}{suffix}"
  )


def training_texts(
  data: ml_collections.ConfigDict, keys: Sequence[str] = ("text",), seed: int = 0
) -> Iterator[str]:
  """Non-blank lines of fields ``keys`` of a seeded sample of train records (both sides of a
  translation pair, say), MAX_TRAINING_CHARS at most."""
  source = sources.from_config(data, train=True)
  total = 0
  for i in np.random.default_rng(seed).permutation(len(source)):
    for key in keys:
      text = sources.record_text(source[int(i)], key)
      total += len(text)
      # SentencePiece trains on sentences of at most 4192 bytes: feed lines.
      yield from (line for line in text.split("\n") if line.strip())
    if total >= MAX_TRAINING_CHARS:
      return


def train_sentencepiece(texts: Iterable[str], path: str, vocab_size: int) -> None:
  """Trains a unigram SentencePiece model with T5's ids on ``texts`` and writes it to ``path``."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=model,
      vocab_size=vocab_size,
      model_type="unigram",
      pad_id=0,
      eos_id=1,
      unk_id=2,
      bos_id=-1,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      byte_fallback=True,
      character_coverage=0.9995,
      input_sentence_size=2_000_000,
      shuffle_input_sentence=True,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
      f"SentencePiece training failed ({e}); the data may be too small for "
      f"config.data.tokenizer_vocab_size={vocab_size}: lower it."
    ) from e
  storage.write_bytes(path, model.getvalue())  # Whole: a reader never sees half a model.


def train_word_level(texts: Iterable[str], path: str, vocab_size: int) -> None:
  """Writes a ``tokenizers`` WordLevel tokenizer.json of ``texts``' words to ``path``."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  from jtrans.data.tokenizers import WORD_SPECIALS  # pylint: disable=g-import-not-at-top

  tok = Tokenizer(models.WordLevel(unk_token=WORD_SPECIALS[2]))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  trainer = trainers.WordLevelTrainer(
    vocab_size=vocab_size, special_tokens=list(WORD_SPECIALS), show_progress=False
  )
  tok.train_from_iterator(texts, trainer=trainer)
  storage.write_bytes(path, tok.to_str().encode())


def _train(data: ml_collections.ConfigDict, keys: Sequence[str], path: str) -> None:
  train = train_word_level if data.tokenizer == "word" else train_sentencepiece
  train(training_texts(data, keys), path, data.tokenizer_vocab_size)


def cached_tokenizer(
  data: ml_collections.ConfigDict, train_if_missing: bool = True, keys: Sequence[str] = ("text",)
) -> str:
  """Path of the cached SentencePiece model (or word vocabulary) of ``config.data``'s fields
  ``keys``, trained first if missing and allowed."""
  path = cache_path(data, keys)
  if not storage.path(path).is_file():
    if not train_if_missing:
      raise FileNotFoundError(
        f"No {data.tokenizer} tokenizer at {path} (config.data.tokenizer_path is ''). Train it "
        "once before a multi-process run: python -m jtrans.data.train_tokenizer --config=<same "
        "config and overrides>."
      )
    _train(data, keys, path)
  return path


def run(config: ml_collections.ConfigDict, overwrite: bool = False) -> str:
  """Trains (unless present and not ``overwrite``) the model of ``config.data``; returns its path."""
  from jtrans.data import tokenizers  # pylint: disable=g-import-not-at-top

  data = config.data
  if data.tokenizer not in ("sentencepiece", "word"):
    raise app.UsageError(
      f"config.data.tokenizer={data.tokenizer!r}: this command trains SentencePiece models "
      "and word vocabularies; add --config.data.tokenizer=sentencepiece (or word)."
    )
  keys = sources.text_keys(config)
  path = data.tokenizer_path or cache_path(data, keys)
  if storage.path(path).is_file() and not overwrite:
    print(f"{path} exists; keeping it (--overwrite retrains it).")
  else:
    _train(data, keys, path)
    print(f"wrote {path}")
  kind = tokenizers.WordTokenizer if data.tokenizer == "word" else tokenizers.SentencePieceTokenizer
  vocab = kind(path).vocab_size
  print(f"vocab_size {vocab}: config.model.vocab_size must be at least that.")
  return path


if __name__ == "__main__":
  # Flags only here: run.py defines its own --config, and imports this module.
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  _CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (configs/*.py).")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Retrain even if the model file exists.")
  flags.mark_flags_as_required(["config"])
  app.run(lambda argv: run(_CONFIG.value, _OVERWRITE.value) and None)
