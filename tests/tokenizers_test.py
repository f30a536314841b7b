"""Tests of the SentencePiece, word-level and GPT-2 BPE tokenizers (trained here on small texts,
nothing downloaded)."""

from __future__ import annotations

import os
import pickle
from pydoc_data.topics import topics

import ml_collections
import numpy as np
import pytest

from configs import base
from jtrans.data import tokenizers, train_tokenizer

CORPUS = [topics[k] for k in sorted(topics)[:25]]  # ~120k characters of English and code.
SAMPLES = [
  "Hello world",
  " Hello  world\n\nnew  line \n",
  "Grüße, ναί, 日本語 🙂!\ttab",
  "def f(x):\r\n    return x ** 2  # ok",
  "",
  "   ",
  "emoji-only 🙂🙃 and ünïcödé",
]


def files_config(tmp_path, **kwargs) -> ml_collections.ConfigDict:
  """config.data of local text files (one per topic) with a SentencePiece tokenizer."""
  corpus = tmp_path / "corpus"
  corpus.mkdir(exist_ok=True)
  for i, text in enumerate(CORPUS):
    (corpus / f"{i:02d}.txt").write_text(text, encoding="utf-8")
  d = base.get_config().data
  d.update(
    {
      "name": "files",
      "train_files": str(corpus / "*.txt"),
      "data_dir": str(tmp_path / "tfds"),
      "tokenizer": "sentencepiece",
      "tokenizer_vocab_size": 600,
      **kwargs,
    }
  )
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
  # Another vocabulary size is another model: not trained when told so.
  d.tokenizer_vocab_size = 700
  d.tokenizer_path = ""
  with pytest.raises(
    FileNotFoundError, match=r"_train_sp700\.model.*jtrans\.data\.train_tokenizer"
  ):
    tokenizers.from_config(d, train_if_missing=False)


def test_word_level_vocabulary_is_the_split_s_words_most_frequent_first(tmp_path, monkeypatch):
  """tokenizer="word" with no path makes a vocabulary of the train split's words and marks
  (grokking's numbers are one token each), caches it, and reloads it from the cache or a path."""
  corpus = tmp_path / "words"
  corpus.mkdir()
  lines = ["12 85=", "3 12=", "12+3=", "7 85=", "hello, world"]
  for i, line in enumerate(lines):
    (corpus / f"{i}.txt").write_text(line)
  d = files_config(tmp_path, train_files=str(corpus / "*.txt"), tokenizer="word")
  d.tokenizer_vocab_size = 12
  tok = tokenizers.from_config(d)
  path = tmp_path / "tfds" / "jtrans_tokenizers"
  (cached,) = os.listdir(path)
  assert cached.endswith("_train_word12.json")
  # Specials 0-2, then by count (= 4, 12 3, 3 2, 85 2, ...), ties in character order; capped at 12.
  vocab = tok._tok.get_vocab()
  assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [
    "<pad>", "</s>", "<unk>", "=", "12", "3", "85", "+", ",", "7", "hello", "world",
  ]  # fmt: skip
  assert (tok.vocab_size, tok.pad_id, tok.eos_id) == (12, 0, 1)
  np.testing.assert_array_equal(tok.encode("12 85="), [4, 6, 3])
  np.testing.assert_array_equal(tok.encode("12+3=9"), [4, 7, 5, 3, 2])  # 9: unknown.
  assert tok.encode("12 85=").dtype == np.int32
  assert tok.decode(np.array([[0, 4, 6, 3, 1, 99]])) == "12 85 ="  # Specials and overflow dropped.

  def fail(*args, **kwargs):
    raise AssertionError("remade a cached vocabulary")

  monkeypatch.setattr(train_tokenizer, "train_word_level", fail)
  np.testing.assert_array_equal(tokenizers.from_config(d).encode("7 3="), [9, 5, 3])
  d.tokenizer_path = str(path / cached)
  copy = pickle.loads(pickle.dumps(tokenizers.from_config(d)))  # grain workers pickle it.
  np.testing.assert_array_equal(copy.encode("hello, world"), [10, 8, 11])
  # A tokenizer.json whose specials are not 0, 1, 2 is refused, naming the setting.
  bad = tmp_path / "bad.json"
  bad.write_text((path / cached).read_text().replace('"<pad>":0', '"<pad>":50'))
  d.tokenizer_path = str(bad)
  with pytest.raises(ValueError, match=r"bad\.json \(config\.data\.tokenizer_path\) maps"):
    tokenizers.from_config(d)


def test_train_tokenizer_command_writes_to_the_path(tmp_path, capsys):
  config = base.get_config()
  config.data = files_config(
    tmp_path, tokenizer_path=str(tmp_path / "sp.model"), tokenizer_vocab_size=400
  )
  assert train_tokenizer.run(config) == str(tmp_path / "sp.model")
  assert "vocab_size 400" in capsys.readouterr().out
  assert (
    tokenizers.from_config(config.data).decode(
      tokenizers.from_config(config.data).encode(SAMPLES[1])
    )
    == SAMPLES[1]
  )
  config.data.tokenizer_vocab_size = 100_000
  with pytest.raises(ValueError, match=r"config\.data\.tokenizer_vocab_size=100000"):
    train_tokenizer.run(config, overwrite=True)


def test_missing_tokenizer_files_name_the_path_and_the_setting(tmp_path):
  d = base.get_config().data
  for kind in ("sentencepiece", "word", "gpt2_bpe"):
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
  trainer = trainers.BpeTrainer(
    vocab_size=700,
    special_tokens=["<|endoftext|>"],
    show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
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
    d.tokenizer_path = {
      "vocab_merges": bpe_dir,
      "json_dir": os.path.join(bpe_dir, "json"),
      "json_file": os.path.join(bpe_dir, "json", "tokenizer.json"),
    }[name]
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
  assert (
    ours.eos_id == hf.eos_token_id == len(vocab) and ours.vocab_size == len(hf) == len(vocab) + 1
  )
  assert ours.encode(SAMPLES[2]).tolist() == hf(SAMPLES[2])["input_ids"]
  Tokenizer(models.BPE(vocab, [])).save(str(tmp_path / "tokenizer.json"))
  message = r"tokenizer\.json \(config\.data\.tokenizer_path\) has no '<\|endoftext\|>'"
  with pytest.raises(ValueError, match=message):
    tokenizers.Gpt2BpeTokenizer(str(tmp_path / "tokenizer.json"))


# ---------------------------------------------------------------- Hugging Face directories

HF_SAMPLES = SAMPLES + [
  "The Café's naïve résumé costs $3.50 (about 3,50 €).",
  "def f(x):\n\treturn [x ** 2 for x in range(10)]  # squares",
  "UPPER lower MiXeD   spaces\n\n\nand newlines",
  CORPUS[4][:2000],
]


def _spm(path, vocab_size, **ids) -> str:
  import sentencepiece as spm

  lines = [line for text in CORPUS for line in text.splitlines() if line.strip()]
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_prefix=str(path),
    vocab_size=vocab_size,
    model_type="unigram",
    minloglevel=2,
    hard_vocab_limit=False,
    **ids,
  )
  return f"{path}.model"


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, bpe_dir):
  """One directory per family, written the way transformers writes them (save_pretrained),
  from tokenizers trained here."""
  import json
  import shutil

  from tokenizers.implementations import BertWordPieceTokenizer
  from transformers import AutoTokenizer, GPT2TokenizerFast

  root = tmp_path_factory.mktemp("hf_tokenizers")
  dirs = {}
  GPT2TokenizerFast(
    os.path.join(bpe_dir, "vocab.json"), os.path.join(bpe_dir, "merges.txt")
  ).save_pretrained(root / "gpt2")
  dirs["gpt2"] = root / "gpt2"
  # Llama and T5 start from their SentencePiece files, as released; transformers converts them
  # and save_pretrained writes the tokenizer.json that jtrans reads.
  for name, cls, model, ids in (
    (
      "llama",
      "LlamaTokenizer",
      "tokenizer.model",
      dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True),
    ),
    ("t5", "T5Tokenizer", "spiece.model", dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)),
  ):
    raw = root / f"{name}_raw"
    raw.mkdir()
    shutil.copy(_spm(root / name, 700, **ids), raw / model)
    (raw / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls, "extra_ids": 0}))
    AutoTokenizer.from_pretrained(raw).save_pretrained(root / name)
    shutil.copy(raw / model, root / name / model)
  words = BertWordPieceTokenizer(lowercase=True)
  words.train_from_iterator(CORPUS, vocab_size=600, show_progress=False)
  for name in ("bert_vocab_txt", "bert"):
    (root / name).mkdir()
    words.save_model(str(root / name))
    (root / name / "tokenizer_config.json").write_text(
      json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
  AutoTokenizer.from_pretrained(root / "bert_vocab_txt").save_pretrained(root / "bert")
  marian = root / "marian"
  marian.mkdir()
  source, target = _spm(root / "source", 500), _spm(root / "target", 450)
  shutil.copy(source, marian / "source.spm")
  shutil.copy(target, marian / "target.spm")
  import sentencepiece as spm

  pieces = set()
  for path in (source, target):
    sp = spm.SentencePieceProcessor(model_file=path)
    pieces |= {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
  vocab = ["</s>", "<unk>"] + sorted(pieces - {"</s>", "<unk>", "<s>"}) + ["<pad>"]
  (marian / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(vocab)}))
  (marian / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
  dirs |= {name: root / name for name in ("llama", "t5", "bert_vocab_txt", "bert", "marian")}
  return {name: str(path) for name, path in dirs.items()}


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "bert", "bert_vocab_txt", "marian"])
def test_hf_directory_ids_equal_autotokenizer(hf_dirs, family):
  from transformers import AutoTokenizer

  from jtrans.data import hf_tokenizer

  directory = hf_dirs[family]
  theirs = AutoTokenizer.from_pretrained(directory)
  d = base.get_config().data
  d.tokenizer, d.tokenizer_path = "hf", directory
  ours = tokenizers.from_config(d)
  assert isinstance(ours, hf_tokenizer.HfTokenizer)
  expected_kind = {"bert_vocab_txt": "vocab.txt", "marian": "marian"}.get(family, "tokenizer.json")
  assert ours.kind == expected_kind
  assert ours.vocab_size == len(theirs)
  for kind in ("eos", "pad", "bos", "mask", "unk", "sep", "cls"):
    want = getattr(theirs, f"{kind}_token_id")
    if want is not None:
      assert ours.ids[kind] == want, kind
  for text in HF_SAMPLES:
    ids = ours.encode(text)
    assert ids.dtype == np.int32
    assert ids.tolist() == theirs(text, add_special_tokens=False)["input_ids"], (family, text)
    assert ours.decode(ids) == theirs.decode(ids.tolist(), skip_special_tokens=True), (family, text)
  # With the family's own special tokens around them, as AutoTokenizer frames a text:
  framed = theirs("Hello world")["input_ids"]
  assert ours.encode("Hello world").tolist() == [i for i in framed if i not in ours.ids.values()]


def test_a_directory_without_tokenizer_files_names_what_it_looked_for(tmp_path):
  from jtrans.data import hf_tokenizer

  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(
    FileNotFoundError,
    match=r"looked for tokenizer\.json, source\.spm \+ "
    r"target\.spm \+ vocab\.json.*vocab\.txt.*--config\.data\.tokenizer=byte",
  ):
    hf_tokenizer.HfTokenizer(str(tmp_path))


@pytest.mark.parametrize("family", ["gpt2", "llama", "marian"])
def test_generate_from_a_hugging_face_directory_continues_as_transformers_does(
  hf_dirs, family, tmp_path
):
  """`run.py --mode=generate --hf_dir=` on a directory with weights and its own tokenizer:
  greedy output text equals transformers' greedy generate on the same ids."""
  import shutil
  import subprocess
  import sys

  import torch
  import transformers

  from jtrans.data import hf_tokenizer
  from tests.hf_parity_test import perturbed

  directory = tmp_path / family
  shutil.copytree(hf_dirs[family], directory)
  tok = hf_tokenizer.HfTokenizer(str(directory))
  torch.manual_seed(0)
  small = dict(vocab_size=tok.vocab_size)
  if family == "gpt2":
    model = transformers.GPT2LMHeadModel(
      transformers.GPT2Config(
        **small, n_positions=64, n_embd=32, n_layer=2, n_head=2, eos_token_id=tok.eos_id
      )
    )
  elif family == "llama":
    model = transformers.LlamaForCausalLM(
      transformers.LlamaConfig(
        **small,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        eos_token_id=tok.eos_id,
        bos_token_id=tok.bos_id,
      )
    )
  else:
    model = transformers.MarianMTModel(
      transformers.MarianConfig(
        **small,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tok.pad_id,
        eos_token_id=tok.eos_id,
        decoder_start_token_id=tok.pad_id,
        forced_eos_token_id=None,
      )
    )
  model = perturbed(model)
  model.save_pretrained(directory, safe_serialization=True)
  prompt = "The value of"
  ids = tok.encode(prompt).tolist() + ([tok.eos_id] if family == "marian" else [])
  with torch.no_grad():
    out = model.generate(
      torch.tensor([ids]),
      max_new_tokens=6,
      do_sample=False,
      num_beams=1,
      eos_token_id=tok.eos_id,
      pad_token_id=tok.pad_id,
      min_new_tokens=0,
    )
  new = out[0].tolist() if family == "marian" else out[0, len(ids) :].tolist()
  want = tok.decode(new)
  assert want.strip(), new  # Some text to compare, not only special tokens.

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
    [
      sys.executable,
      "run.py",
      "--mode=generate",
      f"--hf_dir={directory}",
      f"--prompt={prompt}",
      "--max_new_tokens=6",
      "--config.sample.temperature=0",
    ],
    cwd=root,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"--- 0: {prompt}\n" in result.stdout
  got = result.stdout.split(f"--- 0: {prompt}\n", 1)[1].rstrip("\n")
  assert got == want, (family, got, want)


# ---------------------------------------------------------------- bytes per token (bits per byte)


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "byte", "gpt2_bpe", "sentencepiece"])
def test_token_bytes_add_up_to_the_text_s_utf8_bytes(hf_dirs, bpe_dir, tmp_path, family):
  """The bytes of a text's tokens are the text's UTF-8 bytes: exactly for byte-level
  vocabularies (byte, GPT-2's BPE); for SentencePiece (Llama, T5, our own), those of the text
  the tokens decode to (T5's normalisation drops newlines and repeated spaces), within the one
  word mark it puts before a text."""
  d = base.get_config().data
  if family in hf_dirs:
    d.tokenizer, d.tokenizer_path = "hf", hf_dirs[family]
  elif family == "gpt2_bpe":
    d.tokenizer, d.tokenizer_path = "gpt2_bpe", bpe_dir
  elif family == "sentencepiece":
    d.tokenizer = "sentencepiece"
    d.tokenizer_path = _spm(tmp_path / "sp", 500, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  tok = tokenizers.from_config(d)
  table = tokenizers.token_bytes(tok)
  assert table.shape == (tok.vocab_size,) and table[tok.eos_id] == 1
  byte_level = family in ("gpt2", "byte", "gpt2_bpe")
  for text in HF_SAMPLES:
    ids = tok.encode(text)
    counted = int(table[ids].sum())
    if byte_level:
      assert counted == len(text.encode("utf-8")), (family, text)
    elif not np.isin(ids, [getattr(tok, "ids", {}).get("unk", 2)]).any():  # unk counts 1.
      decoded = len(tok.decode(ids).encode("utf-8"))
      assert decoded <= counted <= decoded + 1, (family, text, counted, decoded)


FIXED_TEXT = "The Café's naïve résumé costs $3.50 (about 3,50 €). " * 20 + CORPUS[3][:3000]


@pytest.mark.parametrize("kind", ["byte", "gpt2_bpe"])
def test_bits_per_byte_of_a_fixed_text(tmp_path, bpe_dir, kind):
  """Evaluation reports bits per byte beside the loss: nll / ln 2 for the byte tokenizer, and
  nll x tokens / (UTF-8 bytes x ln 2) for GPT-2's BPE, on a fixed text (one document: its
  bytes and one EOS, the separator, counted as a byte)."""
  import math

  from configs import lm
  from jtrans import parts, train

  (tmp_path / "eval.txt").write_text(FIXED_TEXT, encoding="utf-8")
  c = lm.get_config("tiny")
  c.data.update(
    {
      "name": "files",
      "train_files": str(tmp_path / "eval.txt"),
      "eval_files": str(tmp_path / "eval.txt"),
      "tokenizer": kind,
      "tokenizer_path": bpe_dir if kind == "gpt2_bpe" else "",
      "data_dir": str(tmp_path / "tfds"),
    }
  )
  tok = tokenizers.from_config(c.data)
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 1, 32, 2, 64
  c.model.vocab_size = tok.vocab_size
  c.train.batch_size = 8
  run = parts.build(c)
  state, _, _ = parts.init_state(run.layout.model, run.layout.tx, c, run.layout.mesh)
  with run.engine.context():
    scalars = train.evaluate(run.engine, state, run.eval_data, 0, run.token_bytes)
  tokens = len(tok.encode(FIXED_TEXT)) + 1
  utf8_bytes = len(FIXED_TEXT.encode("utf-8")) + 1
  assert scalars["tokens"] == tokens
  expected = scalars["nll"] * tokens / (utf8_bytes * math.log(2))
  assert scalars["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
  if kind == "byte":
    assert scalars["bits_per_byte"] == pytest.approx(scalars["nll"] / math.log(2), rel=1e-6)
  else:
    assert tokens < 0.75 * utf8_bytes  # BPE: the same text in fewer tokens.
