"""Llama (LlamaForCausalLM) <-> our decoder with rotary positions, pre-RMSNorm, SwiGLU and
grouped-query attention.

HF's q_proj/k_proj already use the rotate-half layout of `positional.rotary` (Meta's
interleaved checkpoints are permuted when converted to HF), so the weights map as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jtrans.hf import common
from jtrans.models import ModelConfig

IGNORE = (r"rotary_emb\.inv_freq$",)  # A buffer that old checkpoints saved.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = (("wi_gate", "gate_proj"), ("wi_up", "up_proj"), ("wo", "down_proj"))


def _rope_theta(config: dict[str, Any], directory: str) -> float:
  """rope_theta of a transformers 5 `rope_parameters` dict or of the older top-level keys."""
  rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
  kind = rope.get("rope_type", rope.get("type", "default"))
  common.require(
    kind == "default",
    directory,
    f"config.json rope type {kind!r} (RoPE scaling) "
    "is not supported; jtrans implements plain RoPE (rope_type 'default').",
  )
  factor = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
  common.require(factor == 1.0, directory, "partial_rotary_factor != 1 is not supported.")
  return float(rope.get("rope_theta", config.get("rope_theta", 10_000.0)))


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """LlamaForCausalLM's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  bias = config.get("attention_bias", False)
  common.require(
    bias == config.get("mlp_bias", False),
    directory,
    "attention_bias and mlp_bias differ; jtrans has one use_bias for every projection.",
  )
  heads = config["num_attention_heads"]
  cfg = ModelConfig(
    family="decoder",
    vocab_size=config["vocab_size"],
    num_layers=config["num_hidden_layers"],
    num_heads=heads,
    num_kv_heads=config.get("num_key_value_heads") or heads,
    embed_dim=config["hidden_size"],
    attention_head_dim=common.head_dim(config),
    mlp_dim=config["intermediate_size"],
    max_len=config.get("max_position_embeddings", 2048),
    positions="rotary",
    rope_theta=_rope_theta(config, directory),
    norm="rmsnorm",
    norm_position="pre",
    norm_epsilon=config.get("rms_norm_eps", 1e-6),
    gated_mlp=True,
    activation=common.activation(config.get("hidden_act", "silu"), "hidden_act", directory),
    use_bias=bias,
    tie_embeddings=True,
    dropout_rate=0.0,
  )
  flat = {"embed/token_embed/embedding": ckpt.take("model.embed_tokens.weight")}
  for i in range(cfg.num_layers):
    src, dst = f"model.layers.{i}", f"decoder/block_{i}"
    common.put(
      flat,
      f"{dst}/attention",
      common.attention(ckpt, tuple(f"{src}.self_attn.{n}" for n in PROJECTIONS), cfg, bias),
    )
    for ours, theirs in MLP:
      common.put(flat, f"{dst}/mlp/{ours}", common.dense(ckpt, f"{src}.mlp.{theirs}", bias))
    common.put(flat, f"{dst}/attention_norm", common.norm(ckpt, f"{src}.input_layernorm", False))
    common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.post_attention_layernorm", False))
  common.put(flat, "decoder/final_norm", common.norm(ckpt, "model.norm", False))
  head = ckpt.take_tied("lm_head.weight", flat["embed/token_embed/embedding"])
  if head is not None:
    cfg = dataclasses.replace(cfg, tie_embeddings=False)
    flat["logits/output/kernel"] = common.linear_kernel(head)
  return cfg, flat


def matches(cfg: ModelConfig) -> bool:
  return (
    cfg.family == "decoder"
    and cfg.positions == "rotary"
    and cfg.norm == "rmsnorm"
    and cfg.gated_mlp
    and cfg.activation == "silu"
  )


def save(cfg: ModelConfig, flat: common.Flat) -> tuple[dict[str, Any], common.Flat]:
  """Our Llama shaped decoder -> (config.json dict, safetensors tensors) of LlamaForCausalLM."""
  required = {
    "norm_position": "pre",
    "scale_embeddings": False,
    "embed_norm": False,
    "type_vocab_size": 0,
    "output_bias": False,
    "logits_scale": 1.0,
  }
  common.require_settings(cfg, required, "Llama", "llama")
  tensors = {"model.embed_tokens.weight": flat["embed/token_embed/embedding"]}
  for i in range(cfg.num_layers):
    src, dst = f"decoder/block_{i}", f"model.layers.{i}"
    for ours, theirs in zip(("query", "key", "value"), PROJECTIONS):
      kernel = flat[f"{src}/attention/{ours}/kernel"]
      tensors[f"{dst}.self_attn.{theirs}.weight"] = common.linear_kernel(
        kernel.reshape(cfg.embed_dim, -1)
      )
      if cfg.use_bias:
        tensors[f"{dst}.self_attn.{theirs}.bias"] = flat[f"{src}/attention/{ours}/bias"].reshape(-1)
    tensors[f"{dst}.self_attn.o_proj.weight"] = common.linear_kernel(
      flat[f"{src}/attention/out/kernel"].reshape(-1, cfg.embed_dim)
    )
    for ours, theirs in MLP:
      tensors[f"{dst}.mlp.{theirs}.weight"] = common.linear_kernel(flat[f"{src}/mlp/{ours}/kernel"])
    if cfg.use_bias:
      tensors[f"{dst}.self_attn.o_proj.bias"] = flat[f"{src}/attention/out/bias"]
      for ours, theirs in MLP:
        tensors[f"{dst}.mlp.{theirs}.bias"] = flat[f"{src}/mlp/{ours}/bias"]
    tensors[f"{dst}.input_layernorm.weight"] = flat[f"{src}/attention_norm/scale"]
    tensors[f"{dst}.post_attention_layernorm.weight"] = flat[f"{src}/mlp_norm/scale"]
  tensors["model.norm.weight"] = flat["decoder/final_norm/scale"]
  if not cfg.tie_embeddings:
    tensors["lm_head.weight"] = common.linear_kernel(flat["logits/output/kernel"])
  config = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.embed_dim,
    "intermediate_size": cfg.mlp_dim,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.kv_heads,
    "head_dim": cfg.head_dim,
    "hidden_act": "silu",
    "max_position_embeddings": cfg.max_len,
    "rms_norm_eps": cfg.norm_epsilon,
    # Both spellings: transformers 5 reads rope_parameters, 4.x the top-level rope_theta.
    "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
    "rope_theta": cfg.rope_theta,
    "rope_scaling": None,
    "attention_bias": cfg.use_bias,
    "mlp_bias": cfg.use_bias,
    "attention_dropout": cfg.dropout_rate,
    "tie_word_embeddings": cfg.tie_embeddings,
    "initializer_range": 0.02,
    "use_cache": True,
    "pretraining_tp": 1,
    "dtype": "float32",
    # Token ids are not part of ModelConfig: set them in config.json for generation.
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
  }
  return config, tensors
