"""Training starts from an imported Hugging Face directory (config.train.init_from, configs/hf.py)
with its weights unchanged; a config that describes another model fails naming the keys."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from configs import hf as hf_config  # noqa: E402
from jtrans import hf, train  # noqa: E402
from tests.train_test import final_params  # noqa: E402


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(
    transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4)
  )
  directory = tmp_path_factory.mktemp("gpt2")
  model.save_pretrained(directory, safe_serialization=True)
  return str(directory)


def finetune_config(directory, data_dir, **overrides):
  config = hf_config.get_config(directory)
  assert (config.data.tokenizer, config.data.tokenizer_path) == ("hf", directory)
  config.data.tokenizer = "byte"  # These random directories have no tokenizer files.
  config.data.data_dir, config.data.seq_len = data_dir, 32
  config.train.batch_size, config.train.steps, config.train.eval_batches = 8, 1, 1
  config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 1
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


@pytest.mark.parametrize("scan_layers", [False, True])
def test_imported_weights_start_the_run_unchanged(gpt2_dir, data_dir, tmp_path, scan_layers):
  # lr 0: one step leaves the parameters where the import put them (AdamW's decay scales by lr).
  config = finetune_config(
    gpt2_dir, data_dir, **{"optim.lr": 0.0, "model.scan_layers": scan_layers}
  )
  assert config.loss.objective == "lm"
  train.train(config, str(tmp_path))
  step, got = final_params(str(tmp_path))
  assert step == 1
  _, want = hf.load_pretrained(gpt2_dir)
  if scan_layers:
    blocks = [want["decoder"].pop(f"block_{i}") for i in range(2)]
    want["decoder"]["layers"] = {"block": jax.tree.map(lambda *x: np.stack(x), *blocks)}
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_a_config_of_another_model_names_the_differing_keys(gpt2_dir, data_dir, tmp_path):
  config = finetune_config(
    gpt2_dir, data_dir, **{"model.num_layers": 3, "model.norm_epsilon": 1e-6}
  )
  with pytest.raises(
    ValueError, match=r"config.model.num_layers=3 \(checkpoint: 2\).*norm_epsilon"
  ):
    train.train(config, str(tmp_path))


def test_lora_on_imported_weights_keeps_them_and_exports_the_merged_model(
  gpt2_dir, data_dir, tmp_path
):
  """The fine-tuning path: LoRA on a Hugging Face directory's weights (config.train.init_from),
  in scanned layers (the unrolled path: tests/peft_test.py's export test). After training the
  imported weights are bitwise unchanged, the adapters moved, and `--mode=export` writes the
  merged model, whose transformers logits are ours."""
  from jtrans import finetune, modes, parts
  from jtrans.finetune import lora

  overrides = {
    "model.scan_layers": True,
    "train.steps": 3,
    "optim.lr": 1e-2,
    "finetune.method": "lora",
    "finetune.lora_targets": "attention/(query|value)$",
  }
  config = finetune_config(gpt2_dir, data_dir, **overrides)
  train.train(config, str(tmp_path / "run"))
  _, got = final_params(str(tmp_path / "run"))
  _, want = hf.load_pretrained(gpt2_dir)
  blocks = [want["decoder"].pop(f"block_{i}") for i in range(2)]
  want["decoder"]["layers"] = {"block": jax.tree.map(lambda *x: np.stack(x), *blocks)}
  jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in got.items() if k != "lora"}, want)
  assert all(np.abs(b).max() > 0 for b in jax.tree.leaves(got["lora"]))

  modes.export(config, str(tmp_path / "run"), str(tmp_path / "exported"))
  theirs = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "exported")).eval()
  tokens = np.random.default_rng(0).integers(0, 300, (2, 12))
  with torch.no_grad():
    want_logits = theirs(torch.tensor(tokens)).logits.numpy()
  layout = parts.build_layout(config)
  merged = lora.merge(got, finetune.Settings.from_config(config))
  ours = layout.model.apply({"params": merged}, tokens.astype(np.int32))
  np.testing.assert_allclose(np.asarray(ours)[..., :300], want_logits, atol=1e-4)
