"""Every config that names a real TFDS data set trains and evaluates on data of that set's spec.

lm1b, wmt14_translate/de-en, c4/en and imagenet2012 are prepared here by TFDS's own builders
(`tests/tfds_mock.py`: their feature specs, versions and split names, a few records of ours in
place of the download), then each config runs as written apart from its size: the data keys,
splits, tokenizer kind and image preprocessing are the recipe's own. On the toy path these fail:
lm1b has no `validation` split, a translation record has `en`/`de` and no `source`/`target`,
ImageNet's JPEGs come in every size.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from jtrans import parts, train
from jtrans.data import sources
from jtrans.scaling import sweep
from tests import tfds_mock
from tests.configs_test import FILES, ROOT, load

# (config file, argument) -> the TFDS set it names. One size stands for its file: the test
# below checks that the other sizes read the data the same way.
CASES = {
  ("configs/sweeps/ladder.py", None): "lm1b",
  ("configs/sweeps/isoflop.py", None): "lm1b",
  ("configs/transformer.py", "base"): "wmt14_translate/de-en",
  ("configs/t5.py", "small"): "wmt14_translate/de-en",
  ("configs/t5_c4.py", "small"): "c4/en",
  ("configs/llama.py", "1b"): "c4/en",
  ("configs/vit.py", "s"): "imagenet2012",
}
# Keys a size may change without reading the data differently.
SIZE_KEYS = {"seq_len", "source_len", "tokenizer_vocab_size"}
SP_VOCAB = 400  # SentencePiece pieces trained on the small stand-ins (256 are byte fallbacks).


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("real_tfds"))
  for write in (tfds_mock.lm1b, tfds_mock.c4, tfds_mock.wmt14, tfds_mock.imagenet2012):
    write(path)
  return path


def config_of(rel: str, arg: str | None) -> ml_collections.ConfigDict:
  module = load(os.path.join(ROOT, rel))
  config = module.get_config(arg) if arg is not None else module.get_config()
  if hasattr(module, "get_sweep"):  # A sweep: its base with the first point's overrides.
    config = sweep.apply(config, module.get_sweep()[0])
  return config


def variants() -> list[tuple[str, str | None]]:
  """Every config (file, size) that the repository ships."""
  found = []
  for path in FILES:
    rel = os.path.relpath(path, ROOT)
    module = load(path)
    if not hasattr(module, "get_config") or rel in (
      "configs/base.py",
      "configs/hf.py",
      "configs/finetune.py",
      "configs/ladder.py",
    ):
      continue  # base: no recipe; hf, finetune: a Hugging Face directory; ladder: rungs.
    sizes = getattr(module, "SIZES", None)
    found += [(rel, size) for size in sizes] if sizes else [(rel, None)]
  return found


def test_every_config_naming_a_tfds_set_is_tested_here():
  named = {}
  for rel, arg in variants():
    config = config_of(rel, arg)
    builder = config.data.name.split("/")[0]  # "modular_arithmetic/add97": its builder.
    if builder not in sources.LOCAL_BUILDERS | {sources.FILES}:
      named[rel, arg] = config
  tested = {rel: CASES[rel, arg] for rel, arg in CASES}
  assert {rel for rel, _ in named} == set(tested), "add the config's file to CASES"
  for (rel, arg), config in named.items():
    assert config.data.name == tested[rel], (rel, arg)
    representative = config_of(rel, next(a for r, a in CASES if r == rel))
    differ = {k for k in config.data.keys() if config.data[k] != representative.data[k]}
    assert differ <= SIZE_KEYS, f"{rel}:{arg} reads its data unlike the tested size: {differ}"


def shrink(config: ml_collections.ConfigDict, data_dir: str) -> ml_collections.ConfigDict:
  """The recipe at test size: a one-block model, a few steps; its data settings untouched."""
  c = config.copy_and_resolve_references()
  m, d, t = c.model, c.data, c.train
  m.num_layers, m.num_encoder_layers, m.embed_dim, m.mlp_dim = 1, 1, 32, 64
  m.num_heads, m.num_kv_heads = 2, min(m.num_kv_heads, 2)
  m.attention_head_dim = 16 if m.attention_head_dim else 0
  m.max_len = d.seq_len = 32
  d.source_len = 32 if d.source_len else 0
  m.image_size, m.patch_size = 32, 8
  if d.tokenizer == "sentencepiece":  # The model keeps the recipe's rows beyond the pieces.
    m.vocab_size = SP_VOCAB + m.vocab_size - d.tokenizer_vocab_size
    d.tokenizer_vocab_size = SP_VOCAB
  d.data_dir = data_dir
  t.batch_size, t.steps, t.grad_accum_steps = 8, 2, 1
  t.log_every = t.eval_every = t.checkpoint_every = 2
  t.eval_batches = 1
  c.optim.warmup_steps = 1
  c.sample.num_samples = 0
  return c


@pytest.mark.parametrize("rel, arg", list(CASES))
def test_config_trains_and_evaluates_on_its_data_sets_spec(rel, arg, tfds_dir, tmp_path):
  config = shrink(config_of(rel, arg), tfds_dir)
  assert config.data.name == CASES[rel, arg]
  train.train(config, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in records if r["split"] == "train" and "loss" in r]
  evals = [r for r in records if r["split"] == "eval"]
  assert losses and np.isfinite(losses).all()
  assert len(evals) == 1 and np.isfinite(evals[0]["nll"]) and evals[0]["step"] == 2

  batch = next(iter(parts.make_dataset(config, train=True)))
  if config.loss.objective == "classification":
    # Any-size JPEGs arrive as image_size squares, normalised with ImageNet's mean and std:
    # [0, 255] maps to [-0.485 / 0.229, (1 - 0.406) / 0.225] = [-2.12, 2.64].
    assert batch["images"].shape == (8, 32, 32, 3)
    assert batch["images"].min() >= -2.118 - 1e-5 and batch["images"].max() <= 2.640 + 1e-5
    assert batch["images"].min() < -1.5 and batch["images"].max() > 1.5
  if config.data.tokenizer == "sentencepiece":
    tok = parts.make_tokenizer(config)
    assert tok.vocab_size == SP_VOCAB
    if config.loss.objective == "seq2seq":
      # One vocabulary trained on both sides: the target language is cut as coarsely as the
      # source (pieces per character 0.78 and 0.79 here; a model of the English side alone cuts
      # the German 1.28 times as finely as the English).
      (model,) = glob.glob(os.path.join(tfds_dir, "jtrans_tokenizers", "*_en+de_sp*.model"))
      en = tfds_mock.sentences(20, 1)
      pieces = lambda texts: sum(len(tok.encode(t)) for t in texts) / sum(map(len, texts))
      assert pieces([tfds_mock.german(s) for s in en]) < 1.1 * pieces(en), model


@pytest.mark.parametrize(
  "rel, arg, change, message",
  [
    (
      "configs/sweeps/ladder.py",
      None,
      {"data.eval_split": "validation"},
      "lm1b/1.1.0 has no split 'validation' (config.data.eval_split='validation'); its splits "
      "are ['test', 'train'].",
    ),
    (
      "configs/transformer.py",
      "base",
      {"data.source_key": "source"},
      "config.data.source_key='source' is not a feature of wmt14_translate/de-en; its features "
      "are ['de', 'en'].",
    ),
    (
      "configs/llama.py",
      "7b",
      {"data.text_key": "content"},
      "config.data.text_key='content' is not a feature of c4/en; its features are "
      "['content-length', 'content-type', 'text', 'timestamp', 'url'].",
    ),
    (
      "configs/vit.py",
      "b",
      {"model.num_classes": 10},
      "config.model.num_classes=10 is smaller than the 1000 classes of imagenet2012's 'label'; "
      "set it to 1000.",
    ),
    (
      "configs/vit.py",
      "b",
      {"data.train_split": "train[:90%]+val"},
      "imagenet2012/5.1.0 has no split 'val' (config.data.train_split='train[:90%]+val'); its "
      "splits are ['test', 'train', 'validation'].",
    ),
    (
      "configs/t5.py",
      "small",
      {"data.tokenizer_vocab_size": SP_VOCAB + 100, "model.vocab_size": SP_VOCAB},
      f"config.model.vocab_size={SP_VOCAB} is smaller than the 'sentencepiece' tokenizer's "
      f"{SP_VOCAB + 100} ids",
    ),
  ],
  ids=["split", "translation_keys", "text_key", "classes", "split_syntax", "vocabulary"],
)
def test_a_setting_that_cannot_work_fails_at_start_up_naming_it(
  rel, arg, change, message, tfds_dir, tmp_path
):
  config = sweep.apply(shrink(config_of(rel, arg), tfds_dir), change)
  with pytest.raises(ValueError) as error:
    train.train(config, str(tmp_path))
  assert message in str(error.value)
  assert not os.listdir(tmp_path)  # Failed before writing anything.


def test_an_unprepared_set_fails_through_run_py_naming_the_build_command(tmp_path):
  """As a user meets it: the last line printed names the data set, data_dir and the command."""
  empty = tmp_path / "tfds"
  out = subprocess.run(
    [
      sys.executable,
      "run.py",
      "--config=configs/llama.py:7b",
      f"--workdir={tmp_path / 'run'}",
      f"--config.data.data_dir={empty}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  assert out.returncode == 1
  last = [line for line in out.stderr.splitlines() if line.strip()][-1]
  assert last.startswith(
    "jtrans.data.sources.DatasetNotPreparedError: TFDS data set 'c4/en' "
    f"(config.data.name) is not prepared in data_dir '{empty}'"
  ), last
  assert last.endswith(f"tfds build c4/en --data_dir={empty} --file_format=array_record"), last


def test_compile_needs_no_data(tmp_path):
  """`--mode=compile` checks the step fits before the data set exists (or is paid for)."""
  from jtrans import aot

  config = shrink(config_of("configs/llama.py", "1b"), str(tmp_path / "no_data_here"))
  report = aot.compile_report(config)
  assert report["parameters"] > 0 and report["temp_bytes"] >= 0
  assert not (tmp_path / "no_data_here").exists()


def test_the_readme_prepares_every_data_set_the_configs_name():
  """Each set has its `tfds build` line in the README, ending as array_record in a bucket (the
  form jtrans's own error prints); the lines need TensorFlow and the internet, so none runs."""
  readme = open(os.path.join(ROOT, "README.md")).read()
  lines = readme.replace("\\\n", " ").splitlines()
  for name in set(CASES.values()):
    build = next(line for line in lines if line.startswith(f"tfds build {name} "))
    assert "--data_dir=gs://" in build
    converted = [
      line
      for line in lines
      if line.startswith("tfds convert_format")
      and f"/{name}/" in line
      and "--out_file_format=array_record" in line
    ]
    assert "--file_format=array_record" in build or converted, name
  assert sources.build_command("lm1b", "gs://my-bucket/tfds") in readme


def test_the_tokenizer_command_trains_the_model_a_multihost_run_loads(tfds_dir, tmp_path):
  """`python -m jtrans.data.train_tokenizer --config=configs/transformer.py:base` (run once
  before a multi-host launch, whose processes never train one) writes the both-sides model
  that training looks up."""
  from jtrans.data import tokenizers, train_tokenizer

  config = shrink(config_of("configs/transformer.py", "base"), str(tmp_path / "tfds"))
  tfds_mock.wmt14(config.data.data_dir)
  path = train_tokenizer.run(config)
  assert path.endswith(f"_en+de_sp{SP_VOCAB}.model"), path
  loaded = tokenizers.from_config(config.data, False, sources.text_keys(config))
  assert loaded.path == path


def test_big_visions_vit_recipe_trains_on_imagenet2012s_spec(tfds_dir, tmp_path):
  """experiments/vit_digits/config.py:i1k_s16 (big_vision's plain ViT-S/16) on imagenet2012's
  real TFDS spec: its train[:99%] slice of any-size JPEGs through Inception crops, RandAugment and
  Mixup into a sincos2d/GAP model, evaluated on the validation split."""
  config = shrink(config_of("experiments/vit_digits/config.py", "i1k_s16"), tfds_dir)
  assert config.data.name == "imagenet2012" and config.data.mixup == 0.2
  train.train(config, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r for r in records if r["split"] == "eval"]
  assert len(evals) == 1 and np.isfinite(evals[0]["nll"])
  batch = next(iter(parts.make_dataset(config, train=True)))
  assert batch["images"].shape == (8, 32, 32, 3) and (batch["mix"] >= 0.5).all()
  np.testing.assert_array_equal(batch["mixed_targets"], np.roll(batch["targets"], 1))
  # Mixed pixels stay in [-1, 1] (value_range(-1, 1)), and the batch is not the eval view.
  assert -1 - 1e-6 <= batch["images"].min() and batch["images"].max() <= 1 + 1e-6
  assert "mix" not in next(iter(parts.make_dataset(config, train=False)))
