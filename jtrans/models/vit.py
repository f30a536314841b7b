"""Vision Transformer (Dosovitskiy et al.): image patches embedded linearly, a class token or
mean pooling, learned positions, bidirectional pre-LN blocks and a classification head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import masks
from jtrans.models import layers
from jtrans.models.config import ModelConfig


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """`[batch, height, width, channels]` -> `[batch, patches, patch * patch * channels]`,
  patches in row-major order, each flattened as (row, column, channel)."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class ViT(nn.Module):
  """Images `[batch, height, width, channels]` -> class logits `[batch, num_classes]` (float32)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, images: jax.Array, *, deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    x = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "patch_embed", use_bias=True)(
      patchify(images.astype(cfg.dtype), cfg.patch_size)
    )
    if cfg.pool == "cls":
      cls = self.param(
        "cls_token", layers.zeros((None, None, "embed")), (1, 1, cfg.embed_dim), cfg.param_dtype
      )
      x = jnp.concatenate(
        [jnp.broadcast_to(cls, (x.shape[0], 1, cfg.embed_dim)).astype(x.dtype), x], 1
      )
    x = x + self.param(
      "position_embed",
      layers.init((None, None, "embed")),
      (1, x.shape[1], cfg.embed_dim),
      cfg.param_dtype,
    ).astype(x.dtype)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
    x = layers.Stack(cfg, cfg.num_layers, deterministic=deterministic, name="encoder")(
      x, layers.BlockInputs(mask=masks.MaskSpec(**layers.pattern(cfg, causal=False)))
    )
    pooled = x[:, 0] if cfg.pool == "cls" else x.mean(axis=1)
    logits = layers.dense(cfg, cfg.num_classes, ("embed", None), "head", use_bias=True)(pooled)
    return logits.astype(jnp.float32)
