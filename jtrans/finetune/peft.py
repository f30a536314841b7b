"""LoRA adapters in Hugging Face PEFT's files: `adapter_config.json` + `adapter_model.safetensors`.

`save_adapter` writes a run's adapters so that `peft.PeftModel.from_pretrained(base, directory)`
puts them on the Hugging Face model the run started from (the exported base); `load_adapter`
reads a PEFT LoRA directory back into jtrans's `params["lora"]`. Llama-shaped decoders (the
shape `jtrans.hf` exports as LlamaForCausalLM) map one to one: our query/key/value/out and
MLP kernels are PEFT's q_proj/k_proj/v_proj/o_proj and gate_proj/up_proj/down_proj. PEFT
stores `lora_A.weight` as `[r, in]` and `lora_B.weight` as `[out, r]`, our A and B transposed,
and scales by `lora_alpha / r` as we do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import safetensors.numpy
from flax import traverse_util

from jtrans import storage
from jtrans.finetune import Settings, lora
from jtrans.hf import common, llama
from jtrans.models import ModelConfig

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# Our module under a block -> PEFT's module under `model.layers.<i>`.
MODULES = {
  **{
    f"attention/{ours}": f"self_attn.{theirs}"
    for ours, theirs in zip(("query", "key", "value", "out"), llama.PROJECTIONS)
  },
  **{f"mlp/{ours}": f"mlp.{theirs}" for ours, theirs in llama.MLP},
}


def _require_llama(cfg: ModelConfig) -> None:
  if not llama.matches(cfg):
    raise common.ConversionError(
      "PEFT adapters: only Llama-shaped decoders (rotary positions, rmsnorm, gated silu MLP, "
      "the shape jtrans.hf exports as LlamaForCausalLM) map to PEFT's module names so far; "
      "export the merged model with --mode=export instead."
    )


def _unstacked(adapters: dict[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
  """{"decoder/block_<i>/attention/query/a": ...}: a scanned stack's adapters split per layer."""
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(adapters, sep="/").items()}
  out = {}
  for path, value in flat.items():
    if path.startswith("decoder/layers/block/"):
      rest = path[len("decoder/layers/block/") :]
      for i in range(cfg.num_layers):
        out[f"decoder/block_{i}/{rest}"] = value[i]
    else:
      out[path] = value
  return out


def save_adapter(
  directory: str, cfg: ModelConfig, params: dict[str, Any], settings: Settings, base: str = ""
) -> None:
  """Writes `params["lora"]` as a PEFT LoRA adapter of the Llama model `base` (its directory or
  hub name, recorded as base_model_name_or_path)."""
  _require_llama(cfg)
  tensors, names = {}, set()
  for path, value in _unstacked(params[lora.KEY], cfg).items():
    match = re.fullmatch(r"decoder/block_(\d+)/(.+)/([ab])", path)
    if match is None or match.group(2) not in MODULES:
      raise common.ConversionError(f"PEFT adapters: no Llama module for our {path!r}.")
    layer, module, which = match.groups()
    theirs = MODULES[module]
    names.add(theirs.split(".")[-1])
    key = f"base_model.model.model.layers.{layer}.{theirs}.lora_{which.upper()}.weight"
    tensors[key] = np.ascontiguousarray(value.T.astype(np.float32))
  config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base or None,
    "r": settings.lora_rank,
    "lora_alpha": settings.lora_alpha,
    "lora_dropout": 0.0,
    "target_modules": sorted(names),
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "use_rslora": False,
    "use_dora": False,
  }
  root = storage.path(directory)
  root.mkdir(parents=True, exist_ok=True)
  storage.write_text(root / CONFIG, json.dumps(config, indent=2) + "\n")
  (root / WEIGHTS).write_bytes(safetensors.numpy.save(tensors))


def load_adapter(directory: str, cfg: ModelConfig) -> tuple[dict[str, Any], Settings]:
  """A PEFT LoRA directory -> (adapters for `params["lora"]` of our unrolled Llama-shaped
  model, the Settings with its rank and alpha)."""
  _require_llama(cfg)
  root = storage.path(directory)
  config = json.loads((root / CONFIG).read_text())
  if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora"):
    raise common.ConversionError(
      f"{directory}/{CONFIG}: a plain LoRA adapter is needed (peft_type LORA, no DoRA or rsLoRA)."
    )
  if cfg.scan_layers:
    raise common.ConversionError(
      "PEFT adapters load into unrolled layers (model.scan_layers=False)."
    )
  theirs_to_ours = {v: k for k, v in MODULES.items()}
  adapters = {}
  for key, value in safetensors.numpy.load((root / WEIGHTS).read_bytes()).items():
    match = re.fullmatch(
      r"base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight", key
    )
    if match is None or match.group(2) not in theirs_to_ours:
      raise common.ConversionError(f"{directory}/{WEIGHTS}: no jtrans module for {key!r}.")
    layer, module, which = match.groups()
    adapters[f"decoder/block_{layer}/{theirs_to_ours[module]}/{which.lower()}"] = np.asarray(
      value.T, np.float32
    )
  targets = "|".join(sorted({re.escape(p.rsplit("/", 1)[0]) for p in adapters}))
  settings = Settings(
    method="lora",
    lora_targets=f"^({targets})$",
    lora_rank=int(config["r"]),
    lora_alpha=float(config["lora_alpha"]),
  )
  return traverse_util.unflatten_dict(adapters, sep="/"), settings


def is_adapter(directory: str) -> bool:
  return (storage.path(directory) / CONFIG).is_file()


def base_of(directory: str) -> str:
  """The base model directory a PEFT adapter names (base_model_name_or_path)."""
  base = json.loads((storage.path(directory) / CONFIG).read_text()).get("base_model_name_or_path")
  if not base or not (storage.path(base) / "config.json").is_file():
    raise common.ConversionError(
      f"{directory}/{CONFIG}: base_model_name_or_path={base!r} is not a local (or gs://) "
      "Hugging Face directory; set it to the base model's directory (nothing is downloaded)."
    )
  return base


def load_adapted(directory: str) -> tuple[ModelConfig, dict[str, Any]]:
  """A PEFT adapter directory -> (the base's ModelConfig, the base's parameters with the
  adapters merged), as `peft.AutoPeftModelForCausalLM.from_pretrained(directory)` builds it."""
  from jtrans import hf

  cfg, params = hf.load_pretrained(base_of(directory))
  adapters, settings = load_adapter(directory, cfg)
  return cfg, lora.merge({**params, lora.KEY: adapters}, settings)
