"""Vision Transformer (Dosovitskiy et al.): image patches embedded linearly, a class token or
mean pooling, learned or fixed 2-D sine-cosine positions (Beyer et al. 2022, "Better plain ViT
baselines"), bidirectional pre-LN blocks, an optional tanh pre-logits layer and a
classification head."""

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


def sincos2d_positions(
  height: int, width: int, dim: int, temperature: float = 10_000.0, frequency_shift: int = 1
):
  """The fixed position table of a `height` x `width` patch grid, `[height * width, dim]` in
  row-major patch order: for frequencies w_k = temperature^(-k / (dim / 4 - frequency_shift)),
  k < dim / 4, the columns are sin(x w), cos(x w), sin(y w), cos(y w) (x the patch's column,
  y its row). big_vision's ViT has frequency_shift 1; MAE's table (DiT's) 0."""
  quarter = dim // 4
  omega = 1.0 / temperature ** (jnp.arange(quarter) / max(quarter - frequency_shift, 1))
  y, x = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  x = x.reshape(-1, 1) * omega
  y = y.reshape(-1, 1) * omega
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)


def patch_tokens(
  module: nn.Module, cfg: ModelConfig, images: jax.Array, deterministic: bool
) -> jax.Array:
  """Images `[batch, height, width, channels]` -> the tokens the blocks read `[batch, tokens,
  embed]`: patches embedded, positions added, the class token first (pool "cls"), then CLIP's
  pre-LayerNorm (`embed_norm`) and dropout. Its parameters belong to `module`, whose compact
  method calls it."""
  x = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "patch_embed", use_bias=True)(
    patchify(images.astype(cfg.dtype), cfg.patch_size)
  )
  if cfg.positions == "sincos2d":  # On the patches only, as big_vision adds them.
    grid = cfg.image_size // cfg.patch_size
    x = x + sincos2d_positions(grid, grid, cfg.embed_dim).astype(x.dtype)
  if cfg.pool == "cls":
    cls = module.param(
      "cls_token", layers.zeros((None, None, "embed")), (1, 1, cfg.embed_dim), cfg.param_dtype
    )
    x = jnp.concatenate(
      [jnp.broadcast_to(cls, (x.shape[0], 1, cfg.embed_dim)).astype(x.dtype), x], 1
    )
  if cfg.positions == "learned":
    x = x + module.param(
      "position_embed",
      layers.init((None, None, "embed")),
      (1, x.shape[1], cfg.embed_dim),
      cfg.param_dtype,
    ).astype(x.dtype)
  if cfg.embed_norm:
    x = layers.make_norm(cfg, "embed_norm")(x)
  return nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)


def encode(module: nn.Module, cfg: ModelConfig, images: jax.Array, deterministic: bool):
  """The pooled image representation `[batch, embed]` (after the final norm): the class token
  or the mean of the patches."""
  x = patch_tokens(module, cfg, images, deterministic)
  x = layers.Stack(cfg, cfg.num_layers, deterministic=deterministic, name="encoder")(
    x, layers.BlockInputs(mask=masks.MaskSpec(**layers.pattern(cfg, causal=False)))
  )
  return x[:, 0] if cfg.pool == "cls" else x.mean(axis=1)


class ViT(nn.Module):
  """Images `[batch, height, width, channels]` -> class logits `[batch, num_classes]` (float32)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, images: jax.Array, *, deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    pooled = encode(self, cfg, images, deterministic)
    if cfg.pre_logits:
      pooled = jnp.tanh(
        layers.dense(cfg, cfg.embed_dim, ("embed", None), "pre_logits", use_bias=True)(pooled)
      )
    head = layers.dense(
      cfg, cfg.num_classes, ("embed", None), "head", use_bias=True, zero_init=cfg.head_zero_init
    )
    return head(pooled).astype(jnp.float32)
