"""BERT (BertForMaskedLM) -> our encoder: post-LayerNorm blocks, token-type embeddings, an
embedding LayerNorm, and the MLM head (dense, activation, LayerNorm, tied decoder + bias)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jtrans.hf import common
from jtrans.models import ModelConfig

IGNORE = (r"position_ids$", r"^cls\.seq_relationship\.", r"^bert\.pooler\.")


def _modern_names(ckpt: common.Checkpoint):
  """Checkpoints converted from TensorFlow name LayerNorm parameters gamma and beta."""
  for name in list(ckpt.tensors):
    renamed = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
      "LayerNorm.beta", "LayerNorm.bias"
    )
    ckpt.tensors[renamed] = ckpt.tensors.pop(name)


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """BertForMaskedLM's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  kind = config.get("position_embedding_type", "absolute")
  common.require(
    kind == "absolute",
    directory,
    f"position_embedding_type={kind!r} is not "
    "supported; jtrans models BERT's learned absolute positions.",
  )
  cfg = ModelConfig(
    family="encoder",
    vocab_size=config["vocab_size"],
    num_layers=config["num_hidden_layers"],
    num_heads=config["num_attention_heads"],
    embed_dim=config["hidden_size"],
    mlp_dim=config["intermediate_size"],
    max_len=config.get("max_position_embeddings", 512),
    type_vocab_size=config.get("type_vocab_size", 2),
    positions="learned",
    norm="layernorm",
    norm_position="post",
    norm_epsilon=config.get("layer_norm_eps", 1e-12),
    activation=common.activation(config.get("hidden_act", "gelu"), "hidden_act", directory),
    embed_norm=True,
    output_bias=True,
    use_bias=True,
    tie_embeddings=True,
    dropout_rate=0.0,
  )
  _modern_names(ckpt)
  e = "bert.embeddings"
  flat = {
    "embed/token_embed/embedding": ckpt.take(f"{e}.word_embeddings.weight"),
    "embed/position_embed/embedding": ckpt.take(f"{e}.position_embeddings.weight"),
  }
  if cfg.type_vocab_size:
    flat["embed/type_embed/embedding"] = ckpt.take(f"{e}.token_type_embeddings.weight")
  common.put(flat, "embed/embed_norm", common.norm(ckpt, f"{e}.LayerNorm"))
  for i in range(cfg.num_layers):
    src, dst = f"bert.encoder.layer.{i}", f"encoder/block_{i}"
    names = tuple(f"{src}.attention.self.{n}" for n in ("query", "key", "value"))
    common.put(
      flat,
      f"{dst}/attention",
      common.attention(ckpt, names + (f"{src}.attention.output.dense",), cfg),
    )
    common.put(
      flat, f"{dst}/attention_norm", common.norm(ckpt, f"{src}.attention.output.LayerNorm")
    )
    common.put(flat, f"{dst}/mlp/wi", common.dense(ckpt, f"{src}.intermediate.dense"))
    common.put(flat, f"{dst}/mlp/wo", common.dense(ckpt, f"{src}.output.dense"))
    common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.output.LayerNorm"))
  head = "cls.predictions"
  common.put(flat, "head_transform", common.dense(ckpt, f"{head}.transform.dense"))
  common.put(flat, "head_norm", common.norm(ckpt, f"{head}.transform.LayerNorm"))
  flat["logits/bias"] = ckpt.take(f"{head}.bias")
  bias = ckpt.take_tied(f"{head}.decoder.bias", flat["logits/bias"])
  common.require(
    bias is None,
    directory,
    f"{head}.decoder.bias differs from {head}.bias; jtrans has one output bias.",
  )
  decoder = ckpt.take_tied(f"{head}.decoder.weight", flat["embed/token_embed/embedding"])
  if decoder is not None:
    cfg = dataclasses.replace(cfg, tie_embeddings=False)
    flat["logits/output/kernel"] = common.linear_kernel(decoder)
  return cfg, flat
