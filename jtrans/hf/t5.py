"""T5 (T5ForConditionalGeneration) -> our encoder-decoder: pre-RMSNorm, no biases, a bucketed
relative position bias per stack (HF keeps it in block 0; all layers share it), ReLU or gated
GELU feed-forward.

T5 does not scale q.k by 1/sqrt(d_kv) (Mesh TensorFlow folded it into the initialisation);
ours does, so the imported query kernels are multiplied by sqrt(d_kv).

Tied output: T5 multiplies the decoder output by d_model^-0.5 before the shared embedding.
transformers 5 always ties lm_head in a fresh model and records the scaling as
`scale_decoder_outputs` (T5 v1.1's `tie_word_embeddings: false` meant "do not scale");
a checkpoint whose lm_head.weight differs from shared.weight is untied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jtrans.hf import common
from jtrans.models import ModelConfig

# HF's cross-attention never has a relative bias; one old checkpoint format saved it anyway.
IGNORE = (r"EncDecAttention\.relative_attention_bias\.weight$",)
PROJECTIONS = ("q", "k", "v", "o")


def _mlp(config: dict[str, Any], directory: str) -> tuple[bool, str]:
  """(gated, our activation) of `feed_forward_proj`: "relu", "gelu", "gated-gelu", ..."""
  proj = config.get("feed_forward_proj", "relu")
  parts = proj.split("-")
  common.require(
    len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated"),
    directory,
    f"feed_forward_proj={proj!r} is not ACT or gated-ACT.",
  )
  # HF's backward compatibility: "gated-gelu" is the tanh approximation, plain "gelu" exact.
  name = "gelu_new" if proj == "gated-gelu" else parts[-1]
  return len(parts) == 2, common.activation(name, "feed_forward_proj", directory)


def _scales_outputs(config: dict[str, Any]) -> bool:
  if "scale_decoder_outputs" in config:
    return bool(config["scale_decoder_outputs"])
  return config.get("tie_word_embeddings", True) is not False


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """T5ForConditionalGeneration's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  gated, act = _mlp(config, directory)
  cfg = ModelConfig(
    family="encoder_decoder",
    vocab_size=config["vocab_size"],
    num_layers=config.get("num_decoder_layers") or config["num_layers"],
    num_encoder_layers=config["num_layers"],
    num_heads=config["num_heads"],
    embed_dim=config["d_model"],
    attention_head_dim=config["d_kv"],
    mlp_dim=config["d_ff"],
    max_len=config.get("n_positions", 512),
    positions="relative",
    relative_buckets=config.get("relative_attention_num_buckets", 32),
    relative_max_distance=config.get("relative_attention_max_distance", 128),
    norm="rmsnorm",
    norm_position="pre",
    norm_epsilon=config.get("layer_norm_epsilon", 1e-6),
    gated_mlp=gated,
    activation=act,
    use_bias=False,
    tie_embeddings=True,
    dropout_rate=0.0,
  )
  query_scale = cfg.head_dim**0.5
  mlp = (
    (("wi_gate", "wi_0"), ("wi_up", "wi_1"), ("wo", "wo"))
    if gated
    else (("wi", "wi"), ("wo", "wo"))
  )
  flat = {"embed/token_embed/embedding": ckpt.take("shared.weight")}
  for side in ("encoder", "decoder"):
    embed = ckpt.take_tied(f"{side}.embed_tokens.weight", flat["embed/token_embed/embedding"])
    common.require(
      embed is None, directory, f"{side}.embed_tokens.weight differs from shared.weight."
    )
    flat[f"{side}/relative_bias"] = ckpt.take(
      f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    )
    layers = cfg.encoder_layers if side == "encoder" else cfg.num_layers
    for i in range(layers):
      src, dst = f"{side}.block.{i}.layer", f"{side}/block_{i}"
      sublayers = [("attention", "SelfAttention")]
      if side == "decoder":
        sublayers.append(("cross_attention", "EncDecAttention"))
      for j, (ours, theirs) in enumerate(sublayers):
        names = tuple(f"{src}.{j}.{theirs}.{n}" for n in PROJECTIONS)
        common.put(flat, f"{dst}/{ours}", common.attention(ckpt, names, cfg, False, query_scale))
        common.put(flat, f"{dst}/{ours}_norm", common.norm(ckpt, f"{src}.{j}.layer_norm", False))
      j = len(sublayers)
      for ours, theirs in mlp:
        common.put(
          flat, f"{dst}/mlp/{ours}", common.dense(ckpt, f"{src}.{j}.DenseReluDense.{theirs}", False)
        )
      common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.{j}.layer_norm", False))
    common.put(flat, f"{side}/final_norm", common.norm(ckpt, f"{side}.final_layer_norm", False))
  scale = cfg.embed_dim**-0.5 if _scales_outputs(config) else 1.0
  head = ckpt.take_tied("lm_head.weight", flat["embed/token_embed/embedding"])
  if head is None:
    cfg = dataclasses.replace(cfg, logits_scale=scale)
  else:  # Our untied output has no logits_scale: fold it into the matrix.
    cfg = dataclasses.replace(cfg, tie_embeddings=False)
    flat["logits/output/kernel"] = common.linear_kernel(head) * np.float32(scale)
  return cfg, flat
