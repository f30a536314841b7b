"""Decoder-only language model: GPT-2 (pre-LN LayerNorm, learned positions, GELU, biases, tied
embeddings) and the modern option set (RMSNorm, rotary positions, SwiGLU, grouped- or
multi-query attention, no biases, untied output) are options of this one module."""

from __future__ import annotations

import flax.linen as nn
import jax

from jtrans import attention
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class DecoderLM(nn.Module):
  """Maps tokens `[batch, length]` to next-token logits `[batch, length, vocab]` (float32)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    deterministic: bool = True,
    decode: bool = False,
    kv_mask: jax.Array | None = None,
  ) -> jax.Array:
    """Args:
    tokens: int `[batch, length]`.
    positions: int `[batch, length]`; defaults to 0..length-1 (restart per packed document).
    segment_ids: int `[batch, length]` of packed documents (0 = padding); None: one document.
    deterministic: False enables dropout (needs a 'dropout' rng).
    decode: use and extend the KV cache (`init` with decode=True creates it, sized by the
      tokens it is given); `tokens` are then the next tokens, written at the cache index.
    kv_mask: when decoding, which cache slots hold real tokens, `[batch, 1, 1, slots]`
      (False on the left padding of shorter prompts); None: all of them.
    """
    cfg = self.cfg
    positions = layers.default_positions(tokens, positions, decode and not self.is_initializing())
    embed = layers.Embed(cfg, name="embed")
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(embed(tokens, positions))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    if decode and not self.is_initializing():
      mask = kv_mask  # The cache adds causality over its slots.
    else:
      mask = attention.MaskSpec(segment_ids, segment_ids, causal=True, window=layers.window(cfg))
    x = layers.Stack(
      cfg, cfg.num_layers, causal=True, deterministic=deterministic, decode=decode, name="decoder"
    )(x, layers.BlockInputs(mask=mask, positions=positions))
    return layers.Logits(cfg, name="logits")(x, embed)
