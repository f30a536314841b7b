"""CLIP (CLIPModel) -> our CLIP: the vision tower as `vit.encode` (Conv2d patch embedding as a
Dense on `vit.patchify`'s patches with a zero bias, class embedding, learned positions,
pre_layrnorm as `embed_norm`, post_layernorm as the final norm on the class token), the text
tower (token and position embeddings, causal pre-LN blocks, final_layer_norm), both
projections and `logit_scale`. The tokenizer is the directory's (`data.tokenizer="hf"`).

HF pools the text at the first EOS id (the argmax id for old configs with eos_token_id 2);
ours pools at the last real token, where CLIP's tokenizer puts that EOS: the two agree on
tokenised captions (padded after the EOS, with their attention mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jtrans.hf import common
from jtrans.hf.vit import _square
from jtrans.models import ModelConfig

IGNORE = (r"position_ids$",)  # Buffers.
ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def _blocks(ckpt: common.Checkpoint, src: str, cfg: ModelConfig) -> common.Flat:
  """The blocks `{src}.{i}` as `block_{i}/...`."""
  flat: common.Flat = {}
  for i in range(cfg.num_layers):
    s, d = f"{src}.{i}", f"block_{i}"
    names = tuple(f"{s}.{n}" for n in ATTENTION)
    common.put(flat, f"{d}/attention", common.attention(ckpt, names, cfg))
    common.put(flat, f"{d}/attention_norm", common.norm(ckpt, f"{s}.layer_norm1"))
    common.put(flat, f"{d}/mlp/wi", common.dense(ckpt, f"{s}.mlp.fc1"))
    common.put(flat, f"{d}/mlp/wo", common.dense(ckpt, f"{s}.mlp.fc2"))
    common.put(flat, f"{d}/mlp_norm", common.norm(ckpt, f"{s}.layer_norm2"))
  return flat


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """CLIPModel's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  text, vision = config.get("text_config", {}), config.get("vision_config", {})
  acts = {text.get("hidden_act", "quick_gelu"), vision.get("hidden_act", "quick_gelu")}
  eps = {text.get("layer_norm_eps", 1e-5), vision.get("layer_norm_eps", 1e-5)}
  common.require(len(acts) == 1, directory, f"the towers' hidden_act differ: {sorted(acts)}.")
  common.require(len(eps) == 1, directory, f"the towers' layer_norm_eps differ: {sorted(eps)}.")
  width = vision.get("hidden_size", 768)
  text_width = text.get("hidden_size", 512)
  cfg = ModelConfig(
    family="clip",
    vocab_size=text.get("vocab_size", 49408),
    max_len=text.get("max_position_embeddings", 77),
    num_layers=vision.get("num_hidden_layers", 12),
    num_heads=vision.get("num_attention_heads", 12),
    embed_dim=width,
    mlp_dim=vision.get("intermediate_size", 3072),
    image_size=_square(vision.get("image_size", 224), "vision_config.image_size", directory),
    patch_size=_square(vision.get("patch_size", 32), "vision_config.patch_size", directory),
    num_channels=vision.get("num_channels", 3),
    pool="cls",
    positions="learned",
    embed_norm=True,
    norm="layernorm",
    norm_position="pre",
    norm_epsilon=eps.pop(),
    activation=common.activation(acts.pop(), "hidden_act", directory),
    use_bias=True,
    dropout_rate=0.0,
    projection_dim=config.get("projection_dim", 512),
    text_embed_dim=text_width,
    text_num_layers=text.get("num_hidden_layers", 12),
    text_num_heads=text.get("num_attention_heads", 8),
    text_mlp_dim=text.get("intermediate_size", 2048),
    text_causal=True,
    logit_scale_init=config.get("logit_scale_init_value", 2.6592),
  )
  e = "vision_model.embeddings"
  conv = ckpt.take(f"{e}.patch_embedding.weight")  # [width, channels, p, p], no bias.
  image = {
    "patch_embed/kernel": conv.transpose(2, 3, 1, 0).reshape(-1, width),
    "patch_embed/bias": np.zeros(width, conv.dtype),
    "cls_token": ckpt.take(f"{e}.class_embedding").reshape(1, 1, width),
    "position_embed": ckpt.take(f"{e}.position_embedding.weight")[None],
    "projection/kernel": common.linear_kernel(ckpt.take("visual_projection.weight")),
  }
  common.put(image, "embed_norm", common.norm(ckpt, "vision_model.pre_layrnorm"))
  common.put(image, "encoder", _blocks(ckpt, "vision_model.encoder.layers", cfg))
  common.put(image, "encoder/final_norm", common.norm(ckpt, "vision_model.post_layernorm"))
  t = "text_model"
  words = {
    "embed/token_embed/embedding": ckpt.take(f"{t}.embeddings.token_embedding.weight"),
    "embed/position_embed/embedding": ckpt.take(f"{t}.embeddings.position_embedding.weight"),
    "projection/kernel": common.linear_kernel(ckpt.take("text_projection.weight")),
  }
  common.put(words, "encoder", _blocks(ckpt, f"{t}.encoder.layers", cfg.text_tower()))
  common.put(words, "encoder/final_norm", common.norm(ckpt, f"{t}.final_layer_norm"))
  flat: common.Flat = {
    "logit_scale": ckpt.take("logit_scale").reshape(()),
    "logit_bias": np.zeros((), np.float32),
  }
  common.put(flat, "image", image)
  common.put(flat, "text", words)
  return cfg, flat
