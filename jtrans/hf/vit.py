"""ViT (ViTForImageClassification) -> our ViT: a Conv2d patch embedding as a Dense on
`vit.patchify`'s (row, column, channel) patches, class token, learned positions, pre-LayerNorm
blocks, final LayerNorm and the classifier on the class token.

HF takes NCHW `pixel_values`; ours NHWC images.
"""

from __future__ import annotations

import json
from typing import Any

from jtrans import storage
from jtrans.hf import common
from jtrans.models import ModelConfig

IGNORE = (r"^vit\.pooler\.",)  # ViTModel's pooler; the classifier reads the class token.
ATTENTION = (
  "attention.attention.query",
  "attention.attention.key",
  "attention.attention.value",
  "attention.output.dense",
)


def _square(value: int | list[int], setting: str, directory: str) -> int:
  if isinstance(value, (list, tuple)):
    common.require(
      len(set(value)) == 1, directory, f"{setting}={value}: only square sizes are supported."
    )
    return int(value[0])
  return int(value)


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """ViTForImageClassification's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  common.require(
    ckpt.has("classifier.weight"),
    directory,
    "no classifier.weight: save a "
    "ViTForImageClassification (with num_labels > 0), not a bare ViTModel.",
  )
  width, heads = config["hidden_size"], config["num_attention_heads"]
  cfg = ModelConfig(
    family="vit",
    num_layers=config["num_hidden_layers"],
    num_heads=heads,
    embed_dim=width,
    attention_head_dim=common.head_dim(config),
    mlp_dim=config["intermediate_size"],
    image_size=_square(config.get("image_size", 224), "image_size", directory),
    patch_size=_square(config.get("patch_size", 16), "patch_size", directory),
    num_channels=config.get("num_channels", 3),
    num_classes=ckpt.tensors["classifier.weight"].shape[0],
    pool="cls",
    positions="learned",
    norm="layernorm",
    norm_position="pre",
    norm_epsilon=config.get("layer_norm_eps", 1e-12),
    activation=common.activation(config.get("hidden_act", "gelu"), "hidden_act", directory),
    use_bias=True,
    dropout_rate=0.0,
  )
  e = "vit.embeddings"
  conv = ckpt.take(f"{e}.patch_embeddings.projection.weight")  # [width, channels, p, p]
  flat = {
    "patch_embed/kernel": conv.transpose(2, 3, 1, 0).reshape(-1, width),
    "patch_embed/bias": ckpt.take(f"{e}.patch_embeddings.projection.bias"),
    "cls_token": ckpt.take(f"{e}.cls_token"),
    "position_embed": ckpt.take(f"{e}.position_embeddings"),
  }
  qkv_bias = config.get("qkv_bias", True)
  for i in range(cfg.num_layers):
    src, dst = f"vit.encoder.layer.{i}", f"encoder/block_{i}"
    common.put(
      flat,
      f"{dst}/attention",
      common.attention(ckpt, tuple(f"{src}.{n}" for n in ATTENTION), cfg, (qkv_bias, True)),
    )
    common.put(flat, f"{dst}/attention_norm", common.norm(ckpt, f"{src}.layernorm_before"))
    common.put(flat, f"{dst}/mlp/wi", common.dense(ckpt, f"{src}.intermediate.dense"))
    common.put(flat, f"{dst}/mlp/wo", common.dense(ckpt, f"{src}.output.dense"))
    common.put(flat, f"{dst}/mlp_norm", common.norm(ckpt, f"{src}.layernorm_after"))
  common.put(flat, "encoder/final_norm", common.norm(ckpt, "vit.layernorm"))
  common.put(flat, "head", common.dense(ckpt, "classifier"))
  return cfg, flat


def image_processing(directory: str, image_size: int) -> dict[str, Any]:
  """config.data settings that reproduce the directory's image processor
  (`preprocessor_config.json`, as ViTImageProcessor saves it): its mean and std, and
  crop_fraction 1.0 (the processor resizes the whole image to the model's square, so a square
  image is resized, not cropped). {} when the directory has none: ViT's defaults apply."""
  path = storage.path(directory) / "preprocessor_config.json"
  if not path.is_file():
    return {}
  processor = json.loads(path.read_text())
  size = processor.get("size", image_size)
  if isinstance(size, dict):
    size = [size[k] for k in ("height", "width") if k in size] or [size.get("shortest_edge")]
  common.require(
    _square(size, "preprocessor_config.json size", directory) == image_size,
    directory,
    f"preprocessor_config.json resizes to {size}, but config.json's image_size is {image_size}.",
  )
  common.require(
    processor.get("do_rescale", True),
    directory,
    "preprocessor_config.json has "
    "do_rescale false: only processors that scale pixels to [0, 1] are supported.",
  )
  settings: dict[str, Any] = {"crop_fraction": 1.0}
  if processor.get("do_normalize", True):
    mean, std = processor.get("image_mean", [0.5] * 3), processor.get("image_std", [0.5] * 3)
  else:
    mean, std = [0.0], [1.0]
  settings["image_mean"], settings["image_std"] = tuple(mean), tuple(std)
  return settings
