"""Autoregressive sampling from a decoder-only LM.

This version re-runs the model over a fixed-size buffer at every step (no KV cache), so the
whole loop is one compiled program whatever the prompt or sample length.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("model", "num_tokens"))
def sample(model: nn.Module, params: Any, prompt: jax.Array, prompt_length: jax.Array,
           rng: jax.Array, *, num_tokens: int, temperature: float = 1.0) -> jax.Array:
  """Continues each prompt by `num_tokens` sampled tokens.

  Args:
    prompt: int `[batch, buffer]`, the prompt left-aligned and padded; buffer >=
      prompt_length + num_tokens and at most the model's max_len.
    prompt_length: int scalar, tokens of the prompt (the same for every row).
    temperature: softmax temperature; 0 takes the argmax (greedy).
  Returns:
    `[batch, buffer]`: the prompt followed by the sampled tokens.
  """
  def step(i, carry):
    tokens, rng = carry
    rng, key = jax.random.split(rng)
    position = prompt_length + i
    logits = model.apply({"params": params}, tokens)[:, position - 1]
    greedy = jnp.argmax(logits, axis=-1)
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    next_token = jnp.where(temperature > 0, sampled, greedy)
    return tokens.at[:, position].set(next_token.astype(tokens.dtype)), rng

  tokens, _ = jax.lax.fori_loop(0, num_tokens, step, (prompt, rng))
  return tokens
