"""LoRA adapters and Hugging Face PEFT (jtrans/finetune/peft.py): ours loaded by
`peft.PeftModel.from_pretrained` on the base model give our logits, and a PEFT-made adapter
loaded into jtrans gives PEFT's, on a grouped-query Llama whose every tensor is off its init."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import peft  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jtrans import finetune, hf  # noqa: E402
from jtrans.finetune import lora  # noqa: E402
from jtrans.finetune import peft as peft_files  # noqa: E402
from tests.hf_parity_test import ours, perturbed, tokens  # noqa: E402
from tests.pretrained_test import finetune_config  # noqa: E402

TARGETS = "attention/(query|value|out)$|mlp/wo$"  # PEFT: q_proj, v_proj, o_proj, down_proj.


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  torch.manual_seed(0)
  model = perturbed(
    transformers.LlamaForCausalLM(
      transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
      )
    )
  )
  directory = tmp_path_factory.mktemp("llama")
  model.save_pretrained(directory, safe_serialization=True)
  return str(directory)


def base_model(directory):
  return transformers.AutoModelForCausalLM.from_pretrained(directory).float().eval()


def random_adapters(params, settings, seed=0, scale=0.1):
  """LoRA adapters for `settings` with every entry drawn (a fresh B is 0: no effect)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda x: (rng.normal(size=x.shape) * scale).astype(np.float32),
    lora.init(params, settings, jax.random.key(0)),
  )


def greedy(model, ids, tok):
  """Six greedy new tokens of a transformers (or PEFT) model after `ids`."""
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
  return out[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  torch.manual_seed(0)
  model = perturbed(
    transformers.GPT2LMHeadModel(
      transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    )
  )
  directory = tmp_path_factory.mktemp("gpt2")
  model.save_pretrained(directory, safe_serialization=True)
  return str(directory)


def test_gpt2_adapters_fuse_into_c_attn_both_ways(gpt2_dir, tmp_path):
  """GPT-2's c_attn holds query, key and value: our query and value adapters go to PEFT as one
  c_attn adapter of twice the rank (and alpha) with B block-diagonal, and come back; a
  PEFT-made c_attn + c_fc adapter comes in as query/key/value adapters sharing A. Logits agree
  with PEFT's to 1e-4 both ways."""
  cfg, params = hf.load_pretrained(gpt2_dir)
  settings = finetune.Settings(
    method="lora", lora_targets="attention/(query|value|out)$|mlp/wo$", lora_rank=4, lora_alpha=8.0
  )
  adapters = random_adapters(params, settings, seed=0, scale=0.1)
  ours_params = {**params, lora.KEY: adapters}
  peft_files.save_adapter(str(tmp_path / "ours"), cfg, ours_params, settings, base=gpt2_dir)
  model = peft.PeftModel.from_pretrained(base_model(gpt2_dir), str(tmp_path / "ours")).eval()
  x = tokens((2, 12))
  with torch.no_grad():
    want = model(torch.tensor(x)).logits.numpy()
  np.testing.assert_allclose(ours(cfg, lora.merge(ours_params, settings), x), want, atol=1e-4)

  config = peft.LoraConfig(
    r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True
  )
  theirs = peft.get_peft_model(base_model(gpt2_dir), config)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in theirs.named_parameters():
      if "lora_" in name:
        p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
  theirs.save_pretrained(str(tmp_path / "theirs"))
  loaded, loaded_settings = peft_files.load_adapter(str(tmp_path / "theirs"), cfg)
  with torch.no_grad():
    want = theirs.eval()(torch.tensor(x)).logits.numpy()
  got = ours(cfg, lora.merge({**params, lora.KEY: loaded}, loaded_settings), x)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_our_adapter_loads_in_peft_with_our_logits(llama_dir, tmp_path):
  cfg, params = hf.load_pretrained(llama_dir)
  settings = finetune.Settings(method="lora", lora_targets=TARGETS, lora_rank=4, lora_alpha=8.0)
  adapters = random_adapters(params, settings, seed=0, scale=0.1)
  params = {**params, lora.KEY: adapters}
  peft_files.save_adapter(str(tmp_path), cfg, params, settings, base=llama_dir)
  model = peft.PeftModel.from_pretrained(base_model(llama_dir), str(tmp_path)).eval()
  x = tokens((2, 12))
  with torch.no_grad():
    want = model(torch.tensor(x)).logits.numpy()
    plain = base_model(llama_dir)(torch.tensor(x)).logits.numpy()
  got = ours(cfg, lora.merge(params, settings), x)
  np.testing.assert_allclose(got, want, atol=1e-4)
  assert np.abs(want - plain).max() > 1e-2  # The adapters matter.


def test_a_peft_adapter_loads_into_jtrans_with_peft_s_logits(llama_dir, tmp_path):
  config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "gate_proj"])
  model = peft.get_peft_model(base_model(llama_dir), config)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "lora_" in name:  # PEFT starts B at 0: move every adapter tensor.
        p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
  model.save_pretrained(str(tmp_path))
  model.eval()
  cfg, params = hf.load_pretrained(llama_dir)
  adapters, settings = peft_files.load_adapter(str(tmp_path), cfg)
  assert (settings.lora_rank, settings.lora_alpha) == (4, 8.0)
  x = tokens((2, 12))
  with torch.no_grad():
    want = model(torch.tensor(x)).logits.numpy()
  got = ours(cfg, lora.merge({**params, lora.KEY: adapters}, settings), x)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # The same adapters' targets: they are exactly the kernels PEFT adapted.
  assert sorted(lora.targets(params, settings)) == sorted(
    f"decoder/block_{i}/{m}"
    for i in range(2)
    for m in ("attention/query", "attention/key", "mlp/wi_gate")
  )


def test_export_of_a_lora_run_writes_the_merged_model_and_the_peft_adapter(
  llama_dir, data_dir, tmp_path
):
  """The run's path: LoRA on the imported Llama (train.init_from), `--mode=export`; the merged
  directory and PEFT's base + adapter give the same logits, unlike the base alone."""
  from jtrans import modes, train

  overrides = {
    "train.steps": 3,
    "optim.lr": 1e-2,
    "finetune.method": "lora",
    "finetune.lora_targets": TARGETS,
  }
  config = finetune_config(llama_dir, data_dir, **overrides)
  train.train(config, str(tmp_path / "run"))
  message = modes.export(config, str(tmp_path / "run"), str(tmp_path / "hf"))
  assert "adapters alone in PEFT's files" in message, message
  merged = base_model(str(tmp_path / "hf"))
  adapted = peft.PeftModel.from_pretrained(base_model(llama_dir), str(tmp_path / "hf" / "adapter"))
  x = torch.tensor(tokens((2, 12)))
  with torch.no_grad():
    want, got = merged(x).logits.numpy(), adapted.eval()(x).logits.numpy()
    plain = base_model(llama_dir)(x).logits.numpy()
  np.testing.assert_allclose(got, want, atol=1e-4)
  assert np.abs(want - plain).max() > 1e-3


def test_generate_takes_a_peft_adapter_directory_on_its_base(llama_dir, tmp_path):
  """`run.py --mode=generate --hf_dir=<adapter>` loads the base that adapter_config.json names,
  merges the adapter and prints what PEFT's model generates greedily."""
  import subprocess
  import sys

  from jtrans.data import tokenizers

  cfg, params = hf.load_pretrained(llama_dir)
  settings = finetune.Settings(method="lora", lora_targets=TARGETS, lora_rank=4, lora_alpha=8.0)
  adapters = random_adapters(params, settings, seed=2, scale=0.3)
  peft_files.save_adapter(str(tmp_path), cfg, {**params, lora.KEY: adapters}, settings, llama_dir)
  tok = tokenizers.ByteTokenizer()
  prompt = "def f"
  ids = tok.encode(prompt).tolist()
  model = peft.PeftModel.from_pretrained(base_model(llama_dir), str(tmp_path)).eval()
  new_tokens = greedy(model, ids, tok)
  want = tok.decode(new_tokens)
  assert greedy(base_model(llama_dir), ids, tok) != new_tokens  # The adapter matters.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
    [
      sys.executable,
      "run.py",
      "--mode=generate",
      f"--hf_dir={tmp_path}",
      f"--prompt={prompt}",
      "--max_new_tokens=6",
      "--config.sample.temperature=0",
      "--config.data.tokenizer=byte",
    ],
    cwd=root,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  got = result.stdout.split(f"--- 0: {prompt}\n", 1)[1].rstrip("\n")
  assert got == want, (got, want)


def test_a_run_starts_from_a_peft_adapter(llama_dir, data_dir, tmp_path):
  """config.finetune.lora_from: a PEFT-made adapter on the imported Llama starts the run (lr 0:
  it is still there after a step); an adapter of another rank or other modules fails naming
  the setting to change."""
  from jtrans import train
  from tests.train_test import final_params

  config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
  model = peft.get_peft_model(base_model(llama_dir), config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "lora_B" in name:
        p.normal_(0, 0.1)
  model.save_pretrained(str(tmp_path / "adapter"))
  cfg, _ = hf.load_pretrained(llama_dir)
  want, _ = peft_files.load_adapter(str(tmp_path / "adapter"), cfg)
  overrides = {
    "optim.lr": 0.0,
    "finetune.method": "lora",
    "finetune.lora_targets": "attention/(query|value)$",
    "finetune.lora_rank": 4,
    "finetune.lora_alpha": 8.0,
    "finetune.lora_from": str(tmp_path / "adapter"),
  }
  train.train(finetune_config(llama_dir, data_dir, **overrides), str(tmp_path / "run"))
  _, got = final_params(str(tmp_path / "run"))
  jax.tree.map(np.testing.assert_array_equal, got[lora.KEY], want)
  for key, value, message in (
    ("finetune.lora_rank", 8, "has r=4 and lora_alpha=8; set config.finetune.lora_rank"),
    ("finetune.lora_targets", "attention/query$", "chooses other kernels"),
  ):
    bad = finetune_config(llama_dir, data_dir, **{**overrides, key: value})
    with pytest.raises(ValueError, match=message):
      train.train(bad, str(tmp_path / f"bad_{key}"))
