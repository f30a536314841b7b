"""Diffusion Transformer (Peebles & Xie 2023, DiT): predicts the noise in a noised image from
its patches, the diffusion timestep and the class.

Patches are embedded linearly with fixed 2-D sine-cosine positions (MAE's table); the timestep
(sinusoidal features through a SiLU MLP) and the class embedding (one extra row: the null
class that classifier-free guidance drops labels to) add up to the conditioning `c`. Each
block is adaLN-Zero: from SiLU(c), a zero-initialised linear layer gives a shift, scale and
gate for the attention and the MLP branches, around norms without parameters, so every block
starts as the identity. A final adaptive norm and a zero-initialised linear layer map each
token back to its patch's pixels. Conventions follow diffusers' `DiTTransformer2DModel`
(timestep frequencies 10000^(-k / (half - 1)), cos before sin).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import masks
from jtrans.models import layers
from jtrans.models.config import ModelConfig
from jtrans.models.vit import patchify, sincos2d_positions

TIME_FEATURES = 256  # Width of the sinusoidal timestep features (DiT's frequency_embedding_size).


def timestep_features(timesteps: jax.Array, dim: int = TIME_FEATURES) -> jax.Array:
  """`[batch]` (integer or fractional) timesteps -> `[batch, dim]` float32: cos(t w_k) then
  sin(t w_k), w_k = 10000^(-k / (dim / 2 - 1)) for k < dim / 2."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def unpatchify(x: jax.Array, patch: int, grid: int, channels: int) -> jax.Array:
  """`patchify`'s inverse: `[batch, grid * grid, patch * patch * channels]` -> `[batch, grid *
  patch, grid * patch, channels]`."""
  b = x.shape[0]
  x = x.reshape(b, grid, grid, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid * patch, grid * patch, channels)


def _plain_norm(cfg: ModelConfig) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.norm_epsilon, use_bias=False, use_scale=False, dtype=cfg.dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
  """An adaLN-Zero block: `[batch, tokens, embed]` and conditioning `[batch, embed]` in."""

  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    cfg = self.cfg
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
    modulation = layers.dense(
      cfg, 6 * cfg.embed_dim, ("embed", None), "modulation", use_bias=True, zero_init=True
    )(nn.silu(c))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(modulation, 6, axis=-1)
    mask = masks.MaskSpec(**layers.pattern(cfg, causal=False))
    h = _modulate(_plain_norm(cfg)(x), shift_a, scale_a)
    x = x + gate_a[:, None] * dropout(layers.Attention(cfg, False, name="attention")(h, mask))
    h = _modulate(_plain_norm(cfg)(x), shift_m, scale_m)
    x = x + gate_m[:, None] * dropout(layers.Mlp(cfg, name="mlp")(h))
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DiT(nn.Module):
  """(noised images `[batch, height, width, channels]`, timesteps `[batch]`, labels int
  `[batch]` in [0, num_classes], num_classes being the null class) -> the predicted noise,
  float32 of the images' shape."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    timesteps: jax.Array,
    labels: jax.Array,
    *,
    deterministic: bool = True,
  ) -> jax.Array:
    cfg = self.cfg
    grid = cfg.image_size // cfg.patch_size
    x = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "patch_embed", use_bias=True)(
      patchify(images.astype(cfg.dtype), cfg.patch_size)
    )
    x = x + sincos2d_positions(grid, grid, cfg.embed_dim, frequency_shift=0).astype(x.dtype)
    t = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "time_in", use_bias=True)(
      timestep_features(timesteps).astype(cfg.dtype)
    )
    t = layers.dense(cfg, cfg.embed_dim, ("embed", None), "time_out", use_bias=True)(nn.silu(t))
    label_table = nn.Embed(
      cfg.num_classes + 1,
      cfg.embed_dim,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      embedding_init=layers.init((None, "embed"), cfg.init_std or 0.02),
      name="label_embed",
    )
    c = t + label_table(labels)
    block = layers.remat(DiTBlock, cfg.remat)
    for i in range(cfg.num_layers):
      x = block(cfg, deterministic, name=f"block_{i}")(x, c)
    shift, scale = jnp.split(
      layers.dense(
        cfg, 2 * cfg.embed_dim, ("embed", None), "final_modulation", use_bias=True, zero_init=True
      )(nn.silu(c)),
      2,
      axis=-1,
    )
    x = _modulate(_plain_norm(cfg)(x), shift, scale)
    pixels = cfg.patch_size * cfg.patch_size * cfg.num_channels
    x = layers.dense(cfg, pixels, ("embed", None), "out", use_bias=True, zero_init=True)(x)
    return unpatchify(x, cfg.patch_size, grid, cfg.num_channels).astype(jnp.float32)
