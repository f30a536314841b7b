"""Prompt tuning (Lester et al. 2021): P learned input embeddings ahead of every sequence.

The soft prompt `embedding [P, embed]` (the params tree's `prompt` key) goes through the frozen
decoder as a prompt of P tokens would, at positions 0..P-1; the keys and values it leaves in
each layer are then a prefix (prefix.py), so the sequence's tokens sit at positions P, P+1, ...
and training, evaluation and cached decoding take it as they take prefix tuning's. A soft
prompt equal to a real prompt's token embeddings is that prompt. It starts as the embeddings of
P vocabulary rows drawn at random (Lester et al.'s "sampled vocabulary" initialisation).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jtrans.finetune import Settings, prefix

KEY = "prompt"  # The params tree's key that holds the soft prompt.


def init(params: Any, settings: Settings, rng: jax.Array) -> dict[str, Any]:
  """`settings.prefix_length` rows of the token embedding, drawn at random (float32)."""
  prefix.layout(params)  # A decoder's self-attention takes the keys and values, or an error.
  table = params["embed"]["token_embed"]["embedding"]
  rows = jax.random.randint(rng, (settings.prefix_length,), 0, table.shape[0])
  return {"embedding": jnp.take(table, rows, axis=0).astype(jnp.float32)}


def to_prefix(model: nn.Module, params: Any) -> Any:
  """`params` with the soft prompt replaced by the keys and values it gives each layer
  (`prefix.KEY`'s direct form, `[layers, P, kv_heads, head_dim]`)."""
  base = {k: v for k, v in params.items() if k != KEY}
  soft = params[KEY]["embedding"]
  length = soft.shape[0]
  tokens = jnp.zeros((1, length), jnp.int32)  # Shapes only: `vectors` replace their embeddings.
  init = lambda: model.init(jax.random.key(0), tokens, decode=True)["cache"]
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(init))
  _, mutated = model.apply(
    {"params": base, "cache": cache},
    tokens,
    positions=jnp.arange(length)[None],
    decode=True,
    hidden=True,
    vectors=soft[None],
    mutable=["cache"],
  )
  flat = traverse_util.flatten_dict(mutated["cache"], sep="/")
  tables = []
  for name in ("cached_key", "cached_value"):
    per_module = []
    for path, stacked, _, _ in prefix.layout(base):
      entry = flat[f"{path}/{name}"]  # [1, P, ...] or, scanned, [layers, 1, P, ...].
      per_module.append(entry[:, 0] if stacked else entry)
    tables.append(jnp.concatenate(per_module).astype(jnp.float32))
  return {**base, prefix.KEY: {"key": tables[0], "value": tables[1]}}
