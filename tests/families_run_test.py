"""Each family's `tiny` config trains through run.py, as a user launches it, and its loss falls."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {
  **os.environ,
  "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  "JAX_PLATFORMS": "cpu",
}
STEPS = 40


def run(family, workdir, data_dir, *extra):
  # Two layers instead of four halve the compile time; everything else is the tiny recipe.
  overrides = {
    "model.num_layers": 2,
    "train.steps": STEPS,
    "train.log_every": 5,
    "train.eval_every": STEPS,
    "train.checkpoint_every": STEPS,
    "train.eval_batches": 2,
    "optim.warmup_steps": 5,
    "data.data_dir": data_dir,
    "sample.num_samples": 0,
  }
  args = [sys.executable, "run.py", f"--config=configs/{family}.py:tiny", f"--workdir={workdir}"]
  out = subprocess.run(
    args + [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra),
    cwd=ROOT,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def assert_the_loss_fell(workdir):
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  train = [r["loss"] for r in records if r["split"] == "train" and "loss" in r]
  assert len(train) == STEPS // 5
  evals = [r for r in records if r["split"] == "eval"]
  assert len(evals) == 1 and evals[0]["nll"] < train[0]
  # The loss falls well beyond step-to-step noise.
  assert sum(train[-2:]) / 2 < 0.9 * train[0], train


# gpt2 and llama: test_a_trained_run_exports_to_hugging_face trains them so.
@pytest.mark.parametrize("family", ["bert", "transformer", "t5", "vit"])
def test_tiny_config_trains_and_its_loss_falls(family, data_dir, tmp_path):
  run(family, tmp_path, data_dir)
  assert_the_loss_fell(tmp_path)


@pytest.mark.parametrize(
  "family, hf_class", [("gpt2", "GPT2LMHeadModel"), ("llama", "LlamaForCausalLM")]
)
def test_a_trained_run_exports_to_hugging_face(family, hf_class, data_dir, tmp_path):
  """The tiny config trains through run.py with its loss falling, and run.py --mode=export
  writes a directory that transformers loads, with our logits."""
  import numpy as np
  import torch
  import transformers

  from jtrans.models import ModelConfig, build_model
  from tests.train_test import final_params

  run(family, tmp_path, data_dir)
  assert_the_loss_fell(tmp_path)
  run(family, tmp_path, data_dir, "--mode=export", f"--hf_dir={tmp_path / 'hf'}")
  config = json.load(open(tmp_path / "config.json"))
  cfg = ModelConfig.from_config(config["model"])
  _, params = final_params(str(tmp_path))
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)).astype(np.int32)
  ours = np.asarray(build_model(cfg).apply({"params": params}, tokens))
  model = getattr(transformers, hf_class).from_pretrained(tmp_path / "hf").eval()
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
