"""GPT-2 (GPT2LMHeadModel) <-> our decoder with learned positions, pre-LayerNorm and biases.

GPT-2's Conv1D weights are already `[in, out]`; `c_attn` holds query, key and value side by
side along its output axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jtrans.hf import common
from jtrans.models import ModelConfig

# Buffers of old checkpoints (the causal mask), computed on the fly since.
IGNORE = (r"\.attn\.bias$", r"\.attn\.masked_bias$")
OUR_ACTIVATIONS = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """GPT2LMHeadModel's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  require = lambda ok, why: common.require(ok, directory, why)
  require(
    config.get("scale_attn_weights", True),
    "scale_attn_weights=false is not supported (jtrans always scales q.k by 1/sqrt(head_dim)).",
  )
  require(
    not config.get("scale_attn_by_inverse_layer_idx", False),
    "scale_attn_by_inverse_layer_idx=true is not supported.",
  )
  require(not config.get("add_cross_attention", False), "add_cross_attention is not supported.")
  width = config["n_embd"]
  cfg = ModelConfig(
    family="decoder",
    vocab_size=config["vocab_size"],
    num_layers=config["n_layer"],
    num_heads=config["n_head"],
    embed_dim=width,
    mlp_dim=config.get("n_inner") or 4 * width,
    max_len=config.get("n_positions", 1024),
    positions="learned",
    norm="layernorm",
    norm_position="pre",
    norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
    activation=common.activation(
      config.get("activation_function", "gelu_new"), "activation_function", directory
    ),
    use_bias=True,
    tie_embeddings=True,
    dropout_rate=0.0,
  )
  p = ckpt.prefix("transformer.", "")  # GPT2Model checkpoints (the hub's gpt2) lack the prefix.
  flat = {
    "embed/token_embed/embedding": ckpt.take(f"{p}wte.weight"),
    "embed/position_embed/embedding": ckpt.take(f"{p}wpe.weight"),
  }
  h = cfg.num_heads
  for i in range(cfg.num_layers):
    src, dst = f"{p}h.{i}", f"decoder/block_{i}"
    qkv_w, qkv_b = ckpt.take(f"{src}.attn.c_attn.weight"), ckpt.take(f"{src}.attn.c_attn.bias")
    for name, w, b in zip(("query", "key", "value"), np.split(qkv_w, 3, 1), np.split(qkv_b, 3)):
      flat[f"{dst}/attention/{name}/kernel"] = common.in_heads(w, h)
      flat[f"{dst}/attention/{name}/bias"] = b.reshape(h, -1)
    flat[f"{dst}/attention/out/kernel"] = common.out_heads(
      ckpt.take(f"{src}.attn.c_proj.weight"), h
    )
    flat[f"{dst}/attention/out/bias"] = ckpt.take(f"{src}.attn.c_proj.bias")
    common.put(flat, f"{dst}/attention_norm", common.norm(ckpt, f"{src}.ln_1"))
    common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.ln_2"))
    for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):  # Conv1D: already [in, out].
      flat[f"{dst}/mlp/{ours}/kernel"] = ckpt.take(f"{src}.mlp.{theirs}.weight")
      flat[f"{dst}/mlp/{ours}/bias"] = ckpt.take(f"{src}.mlp.{theirs}.bias")
  common.put(flat, "decoder/final_norm", common.norm(ckpt, f"{p}ln_f"))
  head = ckpt.take_tied("lm_head.weight", flat["embed/token_embed/embedding"])
  if head is not None:
    cfg = dataclasses.replace(cfg, tie_embeddings=False)
    flat["logits/output/kernel"] = common.linear_kernel(head)
  return cfg, flat


def matches(cfg: ModelConfig) -> bool:
  return cfg.family == "decoder" and cfg.positions == "learned" and cfg.norm == "layernorm"


def save(cfg: ModelConfig, flat: common.Flat) -> tuple[dict[str, Any], common.Flat]:
  """Our GPT-2 shaped decoder -> (config.json dict, safetensors tensors) of GPT2LMHeadModel."""
  required = {
    "norm_position": "pre",
    "gated_mlp": False,
    "use_bias": True,
    "scale_embeddings": False,
    "embed_norm": False,
    "type_vocab_size": 0,
    "output_bias": False,
    "logits_scale": 1.0,
  }
  common.require_settings(cfg, required, "GPT-2", "gpt2")
  if cfg.kv_heads != cfg.num_heads or cfg.head_dim * cfg.num_heads != cfg.embed_dim:
    raise common.ConversionError(
      "config.model.num_kv_heads / attention_head_dim: GPT-2 has one "
      "key/value head per query head of width embed_dim / num_heads."
    )
  d = cfg.embed_dim
  tensors = {
    "transformer.wte.weight": flat["embed/token_embed/embedding"],
    "transformer.wpe.weight": flat["embed/position_embed/embedding"],
  }
  for i in range(cfg.num_layers):
    src, dst = f"decoder/block_{i}", f"transformer.h.{i}"
    a = lambda n, src=src: flat[f"{src}/attention/{n}"]
    tensors[f"{dst}.attn.c_attn.weight"] = np.concatenate(
      [a(f"{n}/kernel").reshape(d, d) for n in ("query", "key", "value")], axis=1
    )
    tensors[f"{dst}.attn.c_attn.bias"] = np.concatenate(
      [a(f"{n}/bias").reshape(d) for n in ("query", "key", "value")]
    )
    tensors[f"{dst}.attn.c_proj.weight"] = a("out/kernel").reshape(d, d)
    tensors[f"{dst}.attn.c_proj.bias"] = a("out/bias")
    for ours, theirs in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
      tensors[f"{dst}.{theirs}.weight"] = flat[f"{src}/{ours}/scale"]
      tensors[f"{dst}.{theirs}.bias"] = flat[f"{src}/{ours}/bias"]
    for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):
      tensors[f"{dst}.mlp.{theirs}.weight"] = flat[f"{src}/mlp/{ours}/kernel"]
      tensors[f"{dst}.mlp.{theirs}.bias"] = flat[f"{src}/mlp/{ours}/bias"]
  tensors["transformer.ln_f.weight"] = flat["decoder/final_norm/scale"]
  tensors["transformer.ln_f.bias"] = flat["decoder/final_norm/bias"]
  if not cfg.tie_embeddings:
    tensors["lm_head.weight"] = common.linear_kernel(flat["logits/output/kernel"])
  config = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": cfg.vocab_size,
    "n_positions": cfg.max_len,
    "n_embd": d,
    "n_layer": cfg.num_layers,
    "n_head": cfg.num_heads,
    "n_inner": cfg.mlp_dim,
    "activation_function": OUR_ACTIVATIONS[cfg.activation],
    "layer_norm_epsilon": cfg.norm_epsilon,
    "tie_word_embeddings": cfg.tie_embeddings,
    "resid_pdrop": cfg.dropout_rate,
    "embd_pdrop": cfg.dropout_rate,
    "attn_pdrop": cfg.dropout_rate,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "initializer_range": 0.02,
    "use_cache": True,
    "dtype": "float32",
    # Token ids are not part of ModelConfig: set them in config.json for generation.
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
  }
  return config, tensors
