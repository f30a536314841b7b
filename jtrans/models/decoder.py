"""Decoder-only language model: GPT-2 (pre-LN LayerNorm, learned positions, GELU, biases, tied
embeddings) and the modern option set (RMSNorm, rotary positions, SwiGLU, grouped- or
multi-query attention, no biases, untied output) are options of this one module."""

from __future__ import annotations

import flax.linen as nn
import jax

from jtrans import masks
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class DecoderLM(nn.Module):
  """Maps tokens `[batch, length]` to next-token logits `[batch, length, vocab]` (float32)."""

  cfg: ModelConfig

  def setup(self):
    self.embed = layers.Embed(self.cfg)
    self.logits = layers.Logits(self.cfg)

  def project(self, hidden: jax.Array) -> jax.Array:
    """Final hidden states `[batch, length, embed]` -> float32 logits `[batch, length, vocab]`
    (the chunked loss calls it a chunk of positions at a time)."""
    return self.logits(hidden, self.embed)

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
    hidden: bool = False,
    vectors: jax.Array | None = None,
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
    hidden: return the final hidden states `[batch, length, embed]` for `project` instead.
    vectors: `[batch, length, embed]` in place of the tokens' embeddings (a soft prompt).
    """
    cfg = self.cfg
    positions = layers.default_positions(tokens, positions, decode and not self.is_initializing())
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(
      self.embed(tokens, positions, vectors=vectors)
    )
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    if decode and not self.is_initializing():
      mask = kv_mask  # The cache adds causality over its slots.
    else:
      mask = masks.MaskSpec(segment_ids, segment_ids, **layers.pattern(cfg, causal=True))
    x = layers.Stack(
      cfg, cfg.num_layers, causal=True, deterministic=deterministic, decode=decode, name="decoder"
    )(x, layers.BlockInputs(mask=mask, positions=positions))
    return x if hidden else self.project(x)
