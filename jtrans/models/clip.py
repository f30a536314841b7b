"""CLIP (Radford et al. 2021): a ViT image tower and a Transformer text tower, each pooled and
projected (no bias) into one space of `projection_dim`, L2-normalised; a learned log
temperature (and SigLIP's learned bias, Zhai et al. 2023) turn their dot products into logits
(`losses.contrastive`).

The image tower is `vit.encode` (CLIP's pre-LayerNorm is `embed_norm`, its post-LayerNorm the
stack's final norm on the class token). The text tower is token + learned position embeddings
and pre-LN blocks, causal as in CLIP (`text_causal`) or bidirectional, pooled at the last real
token: where the caption's EOS sits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import masks
from jtrans.models import layers, vit
from jtrans.models.config import ModelConfig


def normalize(x: jax.Array) -> jax.Array:
  """Rows of `[batch, dim]` scaled to unit L2 norm (float32)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class ImageTower(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, images: jax.Array, deterministic: bool = True) -> jax.Array:
    """Images `[batch, height, width, channels]` -> unnormalised `[batch, projection_dim]`."""
    cfg = self.cfg
    pooled = vit.encode(self, cfg, images, deterministic)
    return layers.dense(cfg, cfg.projection_dim, ("embed", None), "projection", use_bias=False)(
      pooled
    )


class TextTower(nn.Module):
  cfg: ModelConfig  # ModelConfig.text_tower(): the text tower's own shape.
  causal: bool = True

  @nn.compact
  def __call__(
    self, texts: jax.Array, text_mask: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    """Token ids `[batch, length]` (real tokens first, `text_mask` 1 on them, 0 on padding;
    None: no padding) -> unnormalised `[batch, projection_dim]`."""
    cfg = self.cfg
    positions = layers.default_positions(texts, None)
    x = layers.Embed(cfg, name="embed")(texts, positions)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
    segments = None if text_mask is None else text_mask.astype(jnp.int32)
    spec = masks.MaskSpec(segments, segments, **layers.pattern(cfg, causal=self.causal))
    x = layers.Stack(
      cfg, cfg.num_layers, causal=self.causal, deterministic=deterministic, name="encoder"
    )(x, layers.BlockInputs(mask=spec, positions=positions))
    if text_mask is None:
      last = jnp.full(texts.shape[:1], texts.shape[1] - 1)
    else:
      last = jnp.maximum(jnp.sum(segments, axis=1) - 1, 0)
    pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    return layers.dense(cfg, cfg.projection_dim, ("embed", None), "projection", use_bias=False)(
      pooled
    )


class CLIP(nn.Module):
  """(images, texts) -> (image embeddings, text embeddings, log scale, bias): the embeddings
  `[batch, projection_dim]` float32 of unit norm; logits are exp(log scale) x image . text +
  bias."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.image = ImageTower(cfg)
    self.text = TextTower(cfg.text_tower(), causal=cfg.text_causal)
    scalar = lambda value: nn.with_logical_partitioning(nn.initializers.constant(value), ())  # noqa: E731
    self.logit_scale = self.param("logit_scale", scalar(cfg.logit_scale_init), (), jnp.float32)
    self.logit_bias = self.param("logit_bias", scalar(cfg.logit_bias_init), (), jnp.float32)

  def encode_image(self, images: jax.Array, deterministic: bool = True) -> jax.Array:
    """`[batch, height, width, channels]` -> unit-norm `[batch, projection_dim]`."""
    return normalize(self.image(images, deterministic))

  def encode_text(
    self, texts: jax.Array, text_mask: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    """`[batch, length]` ids -> unit-norm `[batch, projection_dim]`."""
    return normalize(self.text(texts, text_mask, deterministic))

  def __call__(
    self,
    images: jax.Array,
    texts: jax.Array,
    text_mask: jax.Array | None = None,
    *,
    deterministic: bool = True,
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    return (
      self.encode_image(images, deterministic),
      self.encode_text(texts, text_mask, deterministic),
      self.logit_scale,
      self.logit_bias,
    )
