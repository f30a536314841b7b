"""Encoder-only masked language model, BERT style: token, position and token-type embeddings
with a norm, bidirectional post-LN blocks, and the MLM head (dense, activation, norm, tied
output with a bias)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jtrans import masks
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class EncoderMLM(nn.Module):
  """Maps tokens `[batch, length]` to logits `[batch, length, vocab]` (float32) for every
  position; the masked-LM loss reads those at the masked positions."""

  cfg: ModelConfig

  def setup(self):
    self.embed = layers.Embed(self.cfg)
    self.logits = layers.Logits(self.cfg)

  def project(self, hidden: jax.Array) -> jax.Array:
    """Head output `[batch, length, embed]` -> float32 logits `[batch, length, vocab]` (the
    chunked loss calls it a chunk of positions at a time)."""
    return self.logits(hidden, self.embed)

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    token_types: jax.Array | None = None,
    deterministic: bool = True,
    hidden: bool = False,
  ) -> jax.Array:
    """Args:
    tokens: int `[batch, length]`.
    segment_ids: int `[batch, length]`: tokens attend within their segment; 0 is padding.
    token_types: int `[batch, length]` (sentence A/B); None: all 0.
    hidden: return the head's output `[batch, length, embed]` for `project` instead.
    """
    cfg = self.cfg
    positions = layers.default_positions(tokens, positions)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(
      self.embed(tokens, positions, token_types)
    )
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    mask = masks.MaskSpec(segment_ids, segment_ids, **layers.pattern(cfg, causal=False))
    x = layers.Stack(cfg, cfg.num_layers, deterministic=deterministic, name="encoder")(
      x, layers.BlockInputs(mask=mask, positions=positions)
    )
    x = layers.dense(cfg, cfg.embed_dim, (None, "embed"), "head_transform", use_bias=True)(x)
    x = layers.make_norm(cfg, "head_norm")(layers.activation(cfg.activation)(x))
    return x if hidden else self.project(x)
