"""LoRA adapters in Hugging Face PEFT's files: `adapter_config.json` + `adapter_model.safetensors`.

`save_adapter` writes a run's adapters so that `peft.PeftModel.from_pretrained(base, directory)`
puts them on the Hugging Face model the run started from (the exported base); `load_adapter`
reads a PEFT LoRA directory back into jtrans's `params["lora"]`. The shapes `jtrans.hf` exports
are covered. Llama maps one to one: our query/key/value/out and MLP kernels are PEFT's
q_proj/k_proj/v_proj/o_proj and gate_proj/up_proj/down_proj. GPT-2 fuses query, key and value
into c_attn (see GPT2 below). PEFT stores `lora_A.weight` as `[r, in]` and `lora_B.weight` as
`[out, r]`, our A and B transposed, and scales by `lora_alpha / r` as we do.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import numpy as np
import safetensors.numpy
from flax import traverse_util

from jtrans import storage
from jtrans.finetune import Settings, lora
from jtrans.hf import common, gpt2, llama
from jtrans.models import ModelConfig

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
QKV = ("attention/query", "attention/key", "attention/value")


class Layout(NamedTuple):
  """How one Hugging Face architecture names the modules LoRA adapts."""

  layers: str  # The blocks' prefix: `<layers>.<i>.<module>`.
  modules: dict[str, str]  # Our module under a block -> theirs.
  fused: dict[str, tuple[str, ...]]  # Theirs -> our modules side by side in its output.
  conv1d: bool  # Conv1D weights ([in, out]): PEFT's fan_in_fan_out.


LLAMA = Layout(
  "model.layers",
  {
    **{
      f"attention/{o}": f"self_attn.{t}"
      for o, t in zip(("query", "key", "value", "out"), llama.PROJECTIONS)
    },
    **{f"mlp/{ours}": f"mlp.{theirs}" for ours, theirs in llama.MLP},
  },
  {},
  False,
)
# GPT-2's c_attn holds query, key and value side by side: their adapters become one adapter
# with A stacked along the rank and B block-diagonal (rank n x r, alpha n x alpha: same scale).
GPT2 = Layout(
  "transformer.h",
  {"attention/out": "attn.c_proj", "mlp/wi": "mlp.c_fc", "mlp/wo": "mlp.c_proj"},
  {"attn.c_attn": QKV},
  True,
)


def _layout(cfg: ModelConfig) -> Layout:
  if llama.matches(cfg):
    return LLAMA
  if gpt2.matches(cfg):
    return GPT2
  raise common.ConversionError(
    "PEFT adapters: only GPT-2- and Llama-shaped decoders (what jtrans.hf exports) map to "
    "PEFT's module names; export the merged model with --mode=export instead."
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
  """Writes `params["lora"]` as a PEFT LoRA adapter of the GPT-2 or Llama model `base` (its
  directory or hub name, recorded as base_model_name_or_path)."""
  layout = _layout(cfg)
  r = settings.lora_rank
  flat = _unstacked(params[lora.KEY], cfg)
  blocks: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  for path in sorted({p.rsplit("/", 1)[0] for p in flat}):
    match = re.fullmatch(r"decoder/block_(\d+)/(.+)", path)
    module = match.group(2) if match else ""
    if module not in layout.modules and not any(module in f for f in layout.fused.values()):
      raise common.ConversionError(f"PEFT adapters: no {layout.layers} module for our {path!r}.")
    blocks.setdefault(int(match.group(1)), {})[module] = (flat[f"{path}/a"], flat[f"{path}/b"])
  tensors, targets, fused_ranks = {}, set(), {}

  def put(layer: int, theirs: str, a: np.ndarray, b: np.ndarray) -> None:
    key = f"base_model.model.{layout.layers}.{layer}.{theirs}"
    tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(a.T.astype(np.float32))
    tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(b.T.astype(np.float32))
    targets.add(theirs)

  for layer, modules in blocks.items():
    for ours, (a, b) in modules.items():
      if ours in layout.modules:
        put(layer, layout.modules[ours], a, b)
    for theirs, parts in layout.fused.items():
      present = [p for p in parts if p in modules]
      if not present:
        continue
      fused_ranks.setdefault(theirs, set()).add(len(present))
      width = modules[present[0]][1].shape[1]
      a = np.concatenate([modules[p][0] for p in present], axis=1)  # [in, n r]
      b = np.zeros((len(present) * r, len(parts) * width), np.float32)
      for j, p in enumerate(present):
        slot = parts.index(p)
        b[j * r : (j + 1) * r, slot * width : (slot + 1) * width] = modules[p][1]
      put(layer, theirs, a, b)
  if any(len(n) > 1 for n in fused_ranks.values()):
    raise common.ConversionError(
      "PEFT adapters: every block must adapt the same of query/key/value (PEFT gives c_attn "
      "one rank); set config.finetune.lora_targets alike for every block."
    )
  patterns = {t.split(".")[-1]: n.pop() for t, n in fused_ranks.items()}
  config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base or None,
    "r": r,
    "lora_alpha": settings.lora_alpha,
    "rank_pattern": {k: n * r for k, n in patterns.items() if n != 1},
    "alpha_pattern": {k: n * settings.lora_alpha for k, n in patterns.items() if n != 1},
    "lora_dropout": 0.0,
    # Named with their parents ("attn.c_proj"): "c_proj" alone would take the MLP's too.
    "target_modules": sorted(targets),
    "bias": "none",
    "fan_in_fan_out": layout.conv1d,
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
  """A PEFT LoRA directory -> (adapters for `params["lora"]` of our unrolled GPT-2 or Llama
  shaped model, the Settings with its rank and alpha). A fused c_attn adapter becomes query,
  key and value adapters sharing its A."""
  layout = _layout(cfg)
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
  theirs_to_ours = {v: k for k, v in layout.modules.items()}
  prefix = re.escape(f"base_model.model.{layout.layers}.")
  pieces: dict[tuple[str, str], dict[str, np.ndarray]] = {}
  for key, value in safetensors.numpy.load((root / WEIGHTS).read_bytes()).items():
    match = re.fullmatch(prefix + r"(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
    if match is None or (
      match.group(2) not in theirs_to_ours and match.group(2) not in layout.fused
    ):
      raise common.ConversionError(f"{directory}/{WEIGHTS}: no jtrans module for {key!r}.")
    layer, theirs, which = match.groups()
    pieces.setdefault((layer, theirs), {})[which] = np.asarray(value.T, np.float32)
  adapters, ranks = {}, set()
  for (layer, theirs), ab in pieces.items():
    a, b = ab["A"], ab["B"]  # [in, r], [r, out]
    ranks.add(a.shape[1])
    if theirs in layout.fused:
      parts = layout.fused[theirs]
      width = b.shape[1] // len(parts)
      for slot, ours in enumerate(parts):
        adapters[f"decoder/block_{layer}/{ours}/a"] = a
        adapters[f"decoder/block_{layer}/{ours}/b"] = b[:, slot * width : (slot + 1) * width]
    else:
      adapters[f"decoder/block_{layer}/{theirs_to_ours[theirs]}/a"] = a
      adapters[f"decoder/block_{layer}/{theirs_to_ours[theirs]}/b"] = b
  alphas = {float(config["lora_alpha"]), *map(float, (config.get("alpha_pattern") or {}).values())}
  if len(ranks) != 1 or len(alphas) != 1 or ranks.pop() != int(config["r"]):
    raise common.ConversionError(
      f"{directory}/{CONFIG}: jtrans takes one rank and alpha for every module; this adapter "
      f"has ranks and alphas that differ (rank_pattern / alpha_pattern)."
    )
  targets = "|".join(sorted({re.escape(p.rsplit("/", 1)[0]) for p in adapters}))
  settings = Settings(
    method="lora",
    lora_targets=f"^({targets})$",
    lora_rank=int(config["r"]),
    lora_alpha=alphas.pop(),
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
