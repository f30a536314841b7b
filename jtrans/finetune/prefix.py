"""Prefix tuning (Li & Liang 2021): learned keys and values before every sequence, per layer.

Each decoder self-attention sees `P` extra keys and values ahead of the sequence's own, at
positions 0..P-1, and every query sees them; the sequence's tokens sit at positions P, P+1, ...
That is a KV cache holding a prompt of P tokens, so setting the prefix to the keys and values
the base computes for a prompt gives exactly the base's logits on prompt + text.

The params tree's `prefix` key holds them, trained while the base stays frozen, either
- reparametrised (`prefix_hidden > 0`, the paper's training form): `embedding [P, embed]`
  through an MLP `embed -> prefix_hidden (tanh) -> layers x 2 x kv_heads x head_dim`; or
- direct: `key`, `value` `[layers, P, kv_heads, head_dim]` (`fold` turns the first into this
  after training, dropping the MLP).
`merge` puts each layer's keys and values into the model's parameters as its attention's
`prefix_key` / `prefix_value` leaves, which `layers.Attention` reads (`offset` gives the
positions' shift). Decoder-only models; the attention then runs on its dense path.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from jtrans.finetune import Settings

KEY = "prefix"  # The params tree's key that holds the trained prefix.
LEAVES = ("prefix_key", "prefix_value")  # An attention module's leaves that `merge` writes.


def attention_paths(params: Any) -> dict[str, tuple[int, ...]]:
  """{decoder self-attention module path: its key kernel's shape} ([layers, ...] when
  scanned)."""
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY}, sep="/")
  found = {
    path[: -len("/key/kernel")]: tuple(x.shape)
    for path, x in flat.items()
    if re.fullmatch(r"decoder/.*attention/key/kernel", path) and "cross" not in path
  }
  if not found:
    raise ValueError(
      "config.finetune.method='prefix' or 'prompt' needs a decoder-only model (its "
      "self-attention keys and values take the prefix); this model has none."
    )
  return found


def layout(params: Any) -> list[tuple[str, int, int, int]]:
  """(path, layers stacked at it, kv_heads, head_dim) of each attention module, in order."""
  found = []
  in_order = lambda item: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", item[0])]
  for path, shape in sorted(attention_paths(params).items(), key=in_order):  # block_2 < 10
    stacked = shape[0] if "/layers/" in f"/{path}/" else 0
    kv_heads, head_dim = shape[-2:]
    found.append((path, stacked, kv_heads, head_dim))
  return found


def init(params: Any, settings: Settings, rng: jax.Array) -> dict[str, Any]:
  """A fresh prefix: reparametrised (embedding N(0, 1), the MLP's kernels uniform with bound
  1 / sqrt(fan_in), as torch's Linear, biases 0) or, with prefix_hidden=0, direct keys and
  values N(0, 1)."""
  modules = layout(params)
  layers = sum(max(stacked, 1) for _, stacked, _, _ in modules)
  kv_heads, head_dim = modules[0][2:]
  length = settings.prefix_length
  embed = attention_paths(params)[modules[0][0]][-3]  # The key kernel's [embed, heads, dim].
  e_rng, i_rng, o_rng = jax.random.split(rng, 3)
  if not settings.prefix_hidden:
    shape = (layers, length, kv_heads, head_dim)
    return {
      "key": jax.random.normal(e_rng, shape, jnp.float32),
      "value": jax.random.normal(i_rng, shape, jnp.float32),
    }
  hidden, out = settings.prefix_hidden, layers * 2 * kv_heads * head_dim
  uniform = lambda key, shape: jax.random.uniform(
    key, shape, jnp.float32, -1 / math.sqrt(shape[0]), 1 / math.sqrt(shape[0])
  )
  return {
    "embedding": jax.random.normal(e_rng, (length, embed), jnp.float32),
    "wi": uniform(i_rng, (embed, hidden)),
    "bi": jnp.zeros((hidden,), jnp.float32),
    "wo": uniform(o_rng, (hidden, out)),
    "bo": jnp.zeros((out,), jnp.float32),
  }


def keys_values(prefix: dict[str, Any], layers: int) -> tuple[jax.Array, jax.Array]:
  """The prefix's keys and values, each float32 `[layers, P, kv_heads, head_dim]` (the MLP
  run when it is reparametrised)."""
  if "key" in prefix:
    return prefix["key"], prefix["value"]
  hidden = jnp.tanh(prefix["embedding"] @ prefix["wi"] + prefix["bi"])
  out = hidden @ prefix["wo"] + prefix["bo"]  # [P, layers * 2 * kv_heads * head_dim]
  length = out.shape[0]
  out = out.reshape(length, layers, 2, -1).transpose(1, 2, 0, 3)  # [layers, 2, P, ...]
  return out[:, 0], out[:, 1]


def merge(params: Any) -> Any:
  """The model's parameters: without the `prefix` key, each decoder self-attention holding
  its layer's `prefix_key` and `prefix_value` `[P, kv_heads, head_dim]` (stacked in front
  when scanned); `params` itself when it has no prefix."""
  if KEY not in params:
    return params
  modules = layout(params)
  layers = sum(max(stacked, 1) for _, stacked, _, _ in modules)
  keys, values = keys_values(params[KEY], layers)
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY}, sep="/")
  first = 0
  for path, stacked, kv_heads, head_dim in modules:
    count = max(stacked, 1)
    for leaf, table in zip(LEAVES, (keys, values)):
      block = table[first : first + count].reshape(count, -1, kv_heads, head_dim)
      flat[f"{path}/{leaf}"] = block if stacked else block[0]
    first += count
  return traverse_util.unflatten_dict(flat, sep="/")


def fold(params: Any) -> Any:
  """A reparametrised prefix replaced by its keys and values (the MLP dropped)."""
  if KEY not in params or "key" in params[KEY]:
    return params
  layers = sum(max(stacked, 1) for _, stacked, _, _ in layout(params))
  keys, values = keys_values(params[KEY], layers)
  return {**params, KEY: {"key": keys, "value": values}}


def offset(params: Any) -> int:
  """How far the tokens' positions shift: the prefix length in merged `params` (0: none)."""
  flat = traverse_util.flatten_dict(params, sep="/")
  lengths = {x.shape[-3] for p, x in flat.items() if p.endswith("/prefix_key")}
  return lengths.pop() if lengths else 0
