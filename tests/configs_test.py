"""Every config file, and every variant its docstring documents, loads and validates."""

import glob
import importlib.util
import os
import re

import pytest

from jtrans.models import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(
  f
  for f in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
  if not f.endswith("__init__.py")
)


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def documented_variants():
  """(file, argument) for every `--config=configs/<file>.py[:arg]` in a config docstring."""
  variants = []
  for path in FILES:
    doc = load(path).__doc__ or ""
    for rel, arg in re.findall(r"--config=(configs/[\w/]+\.py)(?::([\w=,./-]+))?", doc):
      # Their argument is a Hugging Face directory: tests/pretrained_test.py, readme_test.py.
      if rel not in ("configs/hf.py", "configs/finetune.py"):
        variants.append((rel, arg or None))
  return variants


def test_every_config_file_documents_a_command_and_an_expected_result():
  for path in FILES:
    if os.path.basename(path) == "base.py":
      continue
    doc = load(path).__doc__ or ""
    assert "python run.py" in doc and "Expected" in doc, (
      f"{path}: docstring lacks run command or result"
    )


@pytest.mark.parametrize("rel, arg", documented_variants())
def test_documented_variant_builds(rel, arg):
  module = load(os.path.join(ROOT, rel))
  config = module.get_config(arg) if arg is not None else module.get_config()
  model = ModelConfig.from_config(config.model)
  assert config.data.seq_len <= model.max_len
  assert config.train.steps > 0 and config.train.batch_size > 0


def test_base_declares_every_key_with_a_comment():
  source = open(os.path.join(ROOT, "configs", "base.py")).read()
  lines = source.splitlines()
  for previous, line in zip([""] + lines, lines):
    if re.match(r"\s+\w+\.\w+ = (?!\w+ = ml_collections)", line):
      documented = "#" in line or previous.strip().startswith("#")
      assert documented, f"configs/base.py: undocumented key: {line.strip()}"


def test_model_config_defaults_are_the_base_configs():
  """One source of truth: a ModelConfig built without arguments is configs/base.py's model."""
  import dataclasses

  import numpy as np

  from configs import base

  declared, defaults = base.get_config().model, ModelConfig()
  assert set(declared.keys()) == {f.name for f in dataclasses.fields(ModelConfig)}
  for field in dataclasses.fields(ModelConfig):
    value = getattr(defaults, field.name)
    value = np.dtype(value).name if field.name in ("dtype", "param_dtype") else value
    assert value == declared[field.name], field.name
