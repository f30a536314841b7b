"""Hugging Face checkpoints <-> jtrans models, without torch: `config.json` and safetensors.

    cfg, params = load_pretrained("path/to/hf_model")
    logits = build_model(cfg).apply({"params": params}, tokens)
    save_pretrained("path/to/out", cfg, params)  # GPT-2 or Llama shaped decoders.

One file per architecture maps the names and layouts; `common` holds the shared plumbing.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import numpy as np

from jtrans.hf import bert, clip, common, dit, gpt2, llama, marian, t5, vit
from jtrans.hf.common import ConversionError
from jtrans.models import ModelConfig

# config.json model_type -> converter (and the HF class it reads).
ARCHITECTURES: dict[str, ModuleType] = {
  "gpt2": gpt2,
  "llama": llama,
  "bert": bert,
  "marian": marian,
  "t5": t5,
  "vit": vit,
  "clip": clip,
  "dit": dit,
}
HF_CLASSES = {
  "gpt2": "GPT2LMHeadModel",
  "llama": "LlamaForCausalLM",
  "bert": "BertForMaskedLM",
  "marian": "MarianMTModel",
  "t5": "T5ForConditionalGeneration",
  "vit": "ViTForImageClassification",
  "clip": "CLIPModel",
  "dit": "diffusers' DiTTransformer2DModel",
}
# diffusers writes the class name, not a model_type.
DIFFUSERS_CLASSES = {"DiTTransformer2DModel": "dit"}
EXPORTERS = (gpt2, llama)


def _converter(directory: str) -> tuple[dict[str, Any], ModuleType]:
  config = common.read_config(directory)
  model_type = config.get("model_type") or DIFFUSERS_CLASSES.get(config.get("_class_name"))
  if model_type not in ARCHITECTURES:
    supported = ", ".join(f"{k} ({v})" for k, v in HF_CLASSES.items())
    raise ConversionError(
      f"{directory}: config.json model_type={model_type!r} is not supported; "
      f"jtrans.hf reads {supported}."
    )
  return config, ARCHITECTURES[model_type]


def load_config(directory: str) -> ModelConfig:
  """Our ModelConfig of a Hugging Face directory, from `config.json` and the safetensors
  headers (names and shapes) alone: no weight is read."""
  config, arch = _converter(directory)
  ckpt = common.Checkpoint(directory, common.read_tensors(directory), arch.IGNORE, shapes_only=True)
  cfg, _ = arch.load(config, ckpt)
  ckpt.finish()
  return cfg


def load_pretrained(directory: str, dtype: Any = np.float32) -> tuple[ModelConfig, dict[str, Any]]:
  """Reads a Hugging Face model directory (`config.json`, `model.safetensors` or its sharded
  index) of a model type in `HF_CLASSES`.

  Returns our ModelConfig, set to reproduce the HF model (dropout 0, unrolled layers), and the
  parameter tree of `build_model(cfg).init` with numpy leaves of `dtype`. Each tensor is read
  from its file, cast and converted on its own, so the import holds the converted model plus
  one tensor. Raises ConversionError on an unknown model type, a missing file, or tensors that
  do not fit the model.
  """
  config, arch = _converter(directory)
  ckpt = common.Checkpoint(directory, common.read_tensors(directory), arch.IGNORE, dtype)
  cfg, flat = arch.load(config, ckpt)
  ckpt.finish()
  common.check_tree(cfg, flat, directory)
  return cfg, common.nest(flat)


def save_pretrained(directory: str, cfg: ModelConfig, params: dict[str, Any]) -> None:
  """Writes `config.json` and `model.safetensors` that `GPT2LMHeadModel` or `LlamaForCausalLM`
  `.from_pretrained(directory)` loads: learned positions with LayerNorm export as gpt2; rotary
  positions with RMSNorm and a gated silu MLP as llama. Token ids (bos/eos/pad) are left unset.
  """
  if cfg.parametrization != "standard":
    raise ConversionError(
      f"save_pretrained: config.model.parametrization={cfg.parametrization!r} multiplies the "
      "queries, logits and branches by constants a Hugging Face model does not have; only "
      "'standard' models export."
    )
  exporter = next((e for e in EXPORTERS if e.matches(cfg)), None)
  if exporter is None:
    raise ConversionError(
      f"save_pretrained: config.model (family={cfg.family!r}, positions={cfg.positions!r}, "
      f"norm={cfg.norm!r}, gated_mlp={cfg.gated_mlp}, activation={cfg.activation!r}) is "
      "neither GPT-2 shaped (decoder, learned positions, layernorm) nor Llama shaped (decoder, "
      "rotary positions, rmsnorm, gated_mlp with silu); only those two export."
    )
  flat = common.unstack_layers(common.flatten(params), cfg)
  common.check_tree(
    dataclasses.replace(cfg, scan_layers=False), flat, f"save_pretrained({directory!r})"
  )
  config, tensors = exporter.save(cfg, flat)
  common.write(directory, config, tensors)
