"""Encoder-only masked language model, BERT style: token, position and token-type embeddings
with a norm, bidirectional post-LN blocks, and the MLM head (dense, activation, norm, tied
output with a bias)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jtrans import attention
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class EncoderMLM(nn.Module):
  """Maps tokens `[batch, length]` to logits `[batch, length, vocab]` (float32) for every
  position; the masked-LM loss reads those at the masked positions."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    token_types: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """Args:
    tokens: int `[batch, length]`.
    segment_ids: int `[batch, length]`: tokens attend within their segment; 0 is padding.
    token_types: int `[batch, length]` (sentence A/B); None: all 0.
    """
    cfg = self.cfg
    positions = layers.default_positions(tokens, positions)
    embed = layers.Embed(cfg, name="embed")
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(
      embed(tokens, positions, token_types)
    )
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    mask = attention.MaskSpec(segment_ids, segment_ids, window=layers.window(cfg, causal=False))
    x = layers.Stack(cfg, cfg.num_layers, deterministic=deterministic, name="encoder")(
      x, layers.BlockInputs(mask=mask, positions=positions)
    )
    x = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "head_transform", use_bias=True)(x)
    x = layers.make_norm(cfg, "head_norm")(layers.activation(cfg.activation)(x))
    return layers.Logits(cfg, name="logits")(x, embed)
