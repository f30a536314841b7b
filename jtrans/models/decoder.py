"""Decoder-only language model (GPT style): embeddings, a stack of pre-LN blocks, logits."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import attention, positional
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class DecoderLM(nn.Module):
  """Maps tokens `[batch, length]` to next-token logits `[batch, length, vocab]` (float32)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    """Args:
      tokens: int `[batch, length]`.
      positions: int `[batch, length]`; defaults to 0..length-1 (restart per packed document).
      segment_ids: int `[batch, length]` of packed documents (0 = padding); None: one document.
      deterministic: False enables dropout (needs a 'dropout' rng).
    """
    cfg = self.cfg
    length = tokens.shape[1]
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(length), tokens.shape)
    embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                     embedding_init=layers.init(("vocab", "embed")), name="token_embed")
    x = embed(tokens)
    if cfg.positions == "learned":
      x = x + nn.Embed(cfg.max_len, cfg.embed_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                       embedding_init=layers.init((None, "embed"), 0.01), name="position_embed")(positions)
    else:
      x = x + positional.sinusoidal(positions, cfg.embed_dim).astype(cfg.dtype)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    mask = attention.causal_mask(length)
    if segment_ids is not None:
      mask = attention.combine_masks(mask, attention.segment_mask(segment_ids))
    x = layers.BlockStack(cfg, deterministic, name="blocks")(x, mask)
    x = layers.make_norm(cfg, "final_norm")(x)

    if cfg.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        kernel_init=layers.init(("embed", "vocab")), name="output")(x)
    logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return logits.astype(jnp.float32)
