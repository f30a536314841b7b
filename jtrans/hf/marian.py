"""Marian (MarianMTModel) -> our encoder-decoder: post-LayerNorm, sinusoidal positions (sines
in the first half, cosines in the second, as `positional.sinusoidal`), embeddings shared by
source, target and output, and `final_logits_bias` as our output bias.

HF starts decoding from `decoder_start_token_id`, which Marian sets to the pad token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jtrans.hf import common
from jtrans.models import ModelConfig

IGNORE = (r"embed_positions\.weight$",)  # The sinusoidal table, computed by positional.sinusoidal.
SELF = ("q_proj", "k_proj", "v_proj", "out_proj")


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """MarianMTModel's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  require = lambda ok, why: common.require(ok, directory, why)
  require(
    config.get("share_encoder_decoder_embeddings", True)
    and config.get("decoder_vocab_size") in (None, config["vocab_size"]),
    "separate source and target vocabularies (share_encoder_decoder_embeddings=false) are "
    "not supported; jtrans shares one embedding.",
  )
  heads, ffn = config.get("encoder_attention_heads", 16), config.get("encoder_ffn_dim", 4096)
  require(
    heads == config.get("decoder_attention_heads", 16)
    and ffn == config.get("decoder_ffn_dim", 4096),
    "encoder and decoder differ in attention "
    "heads or ffn dim; jtrans uses one num_heads and mlp_dim for both.",
  )
  cfg = ModelConfig(
    family="encoder_decoder",
    vocab_size=config["vocab_size"],
    num_layers=config.get("decoder_layers", 12),
    num_encoder_layers=config.get("encoder_layers", 12),
    num_heads=heads,
    embed_dim=config["d_model"],
    mlp_dim=ffn,
    max_len=config.get("max_position_embeddings", 1024),
    positions="sinusoidal",
    norm="layernorm",
    norm_position="post",
    norm_epsilon=1e-5,  # torch's LayerNorm default.
    activation=common.activation(
      config.get("activation_function", "gelu"), "activation_function", directory
    ),
    scale_embeddings=config.get("scale_embedding", False),
    output_bias=True,
    use_bias=True,
    tie_embeddings=True,
    dropout_rate=0.0,
  )
  flat = {
    "embed/token_embed/embedding": ckpt.take("model.shared.weight"),
    "logits/bias": ckpt.take("final_logits_bias").reshape(-1),
  }
  for side in ("encoder", "decoder"):
    embed = ckpt.take_tied(f"model.{side}.embed_tokens.weight", flat["embed/token_embed/embedding"])
    require(embed is None, f"model.{side}.embed_tokens.weight differs from model.shared.weight.")
    layers = cfg.encoder_layers if side == "encoder" else cfg.num_layers
    for i in range(layers):
      src, dst = f"model.{side}.layers.{i}", f"{side}/block_{i}"
      common.put(
        flat,
        f"{dst}/attention",
        common.attention(ckpt, tuple(f"{src}.self_attn.{n}" for n in SELF), cfg),
      )
      common.put(flat, f"{dst}/attention_norm", common.norm(ckpt, f"{src}.self_attn_layer_norm"))
      if side == "decoder":
        common.put(
          flat,
          f"{dst}/cross_attention",
          common.attention(ckpt, tuple(f"{src}.encoder_attn.{n}" for n in SELF), cfg),
        )
        common.put(
          flat, f"{dst}/cross_attention_norm", common.norm(ckpt, f"{src}.encoder_attn_layer_norm")
        )
      common.put(flat, f"{dst}/mlp/wi", common.dense(ckpt, f"{src}.fc1"))
      common.put(flat, f"{dst}/mlp/wo", common.dense(ckpt, f"{src}.fc2"))
      common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.final_layer_norm"))
  head = ckpt.take_tied("lm_head.weight", flat["embed/token_embed/embedding"])
  if head is not None:
    cfg = dataclasses.replace(cfg, tie_embeddings=False)
    flat["logits/output/kernel"] = common.linear_kernel(head)
  return cfg, flat
