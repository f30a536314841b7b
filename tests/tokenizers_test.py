"""Tests of the SentencePiece and GPT-2 BPE tokenizers (trained here on small texts, nothing downloaded)."""
from __future__ import annotations

import os
import pickle

import ml_collections
import numpy as np
import pytest
from pydoc_data.topics import topics

from configs import base
from jtrans.data import tokenizers, train_tokenizer

CORPUS = [topics[k] for k in sorted(topics)[:25]]  # ~120k characters of English and code.
SAMPLES = ["Hello world", " Hello  world\n\nnew  line \n", "Grüße, ναί, 日本語 🙂!\ttab",
           "def f(x):\r\n    return x ** 2  # ok", "", "   ", "emoji-only 🙂🙃 and ünïcödé"]


def files_config(tmp_path, **kwargs) -> ml_collections.ConfigDict:
  """config.data of local text files (one per topic) with a SentencePiece tokenizer."""
  corpus = tmp_path / "corpus"
  corpus.mkdir(exist_ok=True)
  for i, text in enumerate(CORPUS):
    (corpus / f"{i:02d}.txt").write_text(text, encoding="utf-8")
  d = base.get_config().data
  d.update({"name": "files", "train_files": str(corpus / "*.txt"), "data_dir": str(tmp_path / "tfds"),
            "tokenizer": "sentencepiece", "tokenizer_vocab_size": 600, **kwargs})
  return d


def test_sentencepiece_trains_caches_and_round_trips(tmp_path, monkeypatch):
  d = files_config(tmp_path)
  tok = tokenizers.from_config(d)
  path = tmp_path / "tfds" / "jtrans_tokenizers"
  (cached,) = os.listdir(path)
  assert cached.startswith("files-") and cached.endswith("_train_sp600.model")
  assert (tok.vocab_size, tok.pad_id, tok.eos_id, tok._sp.unk_id()) == (600, 0, 1, 2)  # T5's ids.
  assert tok._sp.bos_id() == -1
  for text in SAMPLES + CORPUS[:3]:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert tok.decode(ids) == text  # Exact: no normalization, bytes for unseen characters.
    assert not {0, 1} & set(ids.tolist())
  text = "".join(CORPUS)
  assert len(tok.encode(text)) < 0.5 * len(text.encode())  # It learned pieces, not bytes.
  ids = tok.encode("return x")
  assert tok.decode(np.concatenate([[0], ids, [1, 0, 0, 600, 5000]])[None]) == "return x"

  mtime = os.path.getmtime(path / cached)

  def fail(*args, **kwargs):
    raise AssertionError("retrained a cached model")

  monkeypatch.setattr(train_tokenizer, "train_sentencepiece", fail)
  again = tokenizers.from_config(d)
  assert os.path.getmtime(path / cached) == mtime
  np.testing.assert_array_equal(again.encode(CORPUS[1]), tok.encode(CORPUS[1]))
  copy = pickle.loads(pickle.dumps(again))  # grain worker processes pickle it.
  np.testing.assert_array_equal(copy.encode(SAMPLES[2]), tok.encode(SAMPLES[2]))
  d.tokenizer_path = str(path / cached)  # An explicit path loads the same model.
  np.testing.assert_array_equal(tokenizers.from_config(d).encode(CORPUS[2]), tok.encode(CORPUS[2]))
  d.tokenizer_vocab_size = 700  # Another vocabulary size is another model: not trained when told so.
  d.tokenizer_path = ""
  with pytest.raises(FileNotFoundError, match=r"_train_sp700\.model.*jtrans\.data\.train_tokenizer"):
    tokenizers.from_config(d, train_if_missing=False)


def test_train_tokenizer_command_writes_to_the_path(tmp_path, capsys):
  config = base.get_config()
  config.data = files_config(tmp_path, tokenizer_path=str(tmp_path / "sp.model"),
                             tokenizer_vocab_size=400)
  assert train_tokenizer.run(config) == str(tmp_path / "sp.model")
  assert "vocab_size 400" in capsys.readouterr().out
  assert tokenizers.from_config(config.data).decode(tokenizers.from_config(config.data).encode(
      SAMPLES[1])) == SAMPLES[1]
  config.data.tokenizer_vocab_size = 100_000
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer_vocab_size=100000"):
    train_tokenizer.run(config, overwrite=True)


def test_missing_tokenizer_files_name_the_path_and_the_setting(tmp_path):
  d = base.get_config().data
  for kind in ("sentencepiece", "gpt2_bpe"):
    d.tokenizer, d.tokenizer_path = kind, str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"nope.*config\.data\.tokenizer_path"):
      tokenizers.from_config(d)
  d.tokenizer_path = ""
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer_path"):
    tokenizers.from_config(d)
  d.tokenizer = "wordpiece"
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer.*'gpt2_bpe'"):
    tokenizers.from_config(d)
  assert tokenizers.get_tokenizer("byte").vocab_size == 259


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> str:
  """A small GPT-2-style byte-level BPE vocabulary, saved as vocab.json + merges.txt and tokenizer.json."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  path = tmp_path_factory.mktemp("bpe")
  tok.model.save(str(path))
  (path / "json").mkdir()
  tok.save(str(path / "json" / "tokenizer.json"))
  return str(path)


def test_gpt2_bpe_ids_equal_hugging_face(bpe_dir):
  from transformers import GPT2TokenizerFast

  hf = GPT2TokenizerFast(os.path.join(bpe_dir, "vocab.json"), os.path.join(bpe_dir, "merges.txt"))
  d = base.get_config().data
  d.tokenizer = "gpt2_bpe"
  ours = {}
  for name in ("vocab_merges", "json_dir", "json_file"):
    d.tokenizer_path = {"vocab_merges": bpe_dir, "json_dir": os.path.join(bpe_dir, "json"),
                        "json_file": os.path.join(bpe_dir, "json", "tokenizer.json")}[name]
    ours[name] = tok = tokenizers.from_config(d)
    assert tok.eos_id == tok.pad_id == hf.eos_token_id == hf.convert_tokens_to_ids("<|endoftext|>")
    assert tok.vocab_size == len(hf) == 700
    for text in SAMPLES + [CORPUS[3], "a<|endoftext|>b"]:
      ids = tok.encode(text)
      assert ids.dtype == np.int32
      assert ids.tolist() == hf(text)["input_ids"], (name, text)
      if "<|endoftext|>" not in text:
        assert tok.decode(ids) == text == hf.decode(ids.tolist())
    assert tok.decode([tok.eos_id, *tok.encode("hi"), tok.eos_id, 9999]) == "hi"
  restored = pickle.loads(pickle.dumps(ours["vocab_merges"]))
  assert restored.encode(SAMPLES[1]).tolist() == hf(SAMPLES[1])["input_ids"]


def test_gpt2_bpe_without_endoftext(tmp_path, bpe_dir):
  """vocab.json without it: appended as Hugging Face does; a tokenizer.json without it: refused."""
  import json

  from tokenizers import Tokenizer, models
  from transformers import GPT2TokenizerFast

  vocab = json.loads(open(os.path.join(bpe_dir, "vocab.json")).read())
  del vocab["<|endoftext|>"]
  vocab = {k: i for i, k in enumerate(sorted(vocab, key=vocab.get))}
  (tmp_path / "vocab.json").write_text(json.dumps(vocab))
  (tmp_path / "merges.txt").write_text(open(os.path.join(bpe_dir, "merges.txt")).read())
  ours = tokenizers.Gpt2BpeTokenizer(str(tmp_path))
  hf = GPT2TokenizerFast(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
  assert ours.eos_id == hf.eos_token_id == len(vocab) and ours.vocab_size == len(hf) == len(vocab) + 1
  assert ours.encode(SAMPLES[2]).tolist() == hf(SAMPLES[2])["input_ids"]
  Tokenizer(models.BPE(vocab, [])).save(str(tmp_path / "tokenizer.json"))
  message = r"tokenizer\.json \(config\.data\.tokenizer_path\) has no '<\|endoftext\|>'"
  with pytest.raises(ValueError, match=message):
    tokenizers.Gpt2BpeTokenizer(str(tmp_path / "tokenizer.json"))
