"""How initialisation, multipliers and per-parameter learning rates scale with width and depth.

`config.model.parametrization`:
- "standard": every weight matrix at `init_std`, one learning rate, logits q.k / sqrt(head_dim).
- "mup": Maximal Update Parametrisation for Adam (Yang et al. 2022, Tensor Programs V, Table 8),
  relative to a base model of width `base_embed_dim`, with which it coincides exactly. With
  m = embed_dim / base_embed_dim:
  hidden matrices (every `kernel` whose axes are all width axes: attention and MLP) start at
  std / sqrt(m) and train at lr / m; embeddings, biases, norm scales and the output matrix keep
  the base's init and learning rate; the logits are multiplied by 1 / m; attention logits are
  q.k * sqrt(base_head_dim) / head_dim (1/d attention), the head count being kept as the width
  grows, so base_head_dim = head_dim / m.
- "completep": muP in width and, in depth, CompleteP (Dey et al. 2025): relative to
  `base_num_layers`, each residual branch is multiplied by (base_num_layers / num_layers)^alpha
  (`depth_alpha`: 1 is CompleteP, 0.5 depth-muP) and hidden matrices train at lr x
  (num_layers / base_num_layers)^(alpha - 1); GPT-2's residual init then divides by the base
  depth, not the model's, since the branch multiplier carries the depth.

Which parameter is which is read from its logical axis names (the metadata every parameter
carries for sharding), so one rule serves init, the optimizer and any mesh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import optax

PARAMETRIZATIONS = ("standard", "mup", "completep")
# Logical axes that grow with the model's width; `vocab`, `layers` and unnamed axes do not.
WIDTH_AXES = frozenset({"embed", "mlp", "heads", "kv"})


def width_multiplier(cfg: Any) -> float:
  """m = embed_dim / base_embed_dim under muP and CompleteP; 1 under standard."""
  if cfg.parametrization == "standard":
    return 1.0
  return cfg.embed_dim / (cfg.base_embed_dim or cfg.embed_dim)


def residual_init_layers(cfg: Any) -> int:
  """The depth GPT-2's residual init divides by: the base depth under CompleteP."""
  if cfg.parametrization == "completep":
    return cfg.base_num_layers or cfg.num_layers
  return cfg.num_layers


def branch_multiplier(cfg: Any) -> float:
  """What each residual branch is multiplied by: (base_num_layers / num_layers)^alpha."""
  if cfg.parametrization != "completep":
    return 1.0
  return ((cfg.base_num_layers or cfg.num_layers) / cfg.num_layers) ** cfg.depth_alpha


def query_multiplier(cfg: Any) -> float:
  """Multiplies the queries so that q.k / sqrt(head_dim) becomes q.k sqrt(base_head_dim) /
  head_dim (muP's 1/d attention), whatever attention kernel runs: m^-1/2."""
  return width_multiplier(cfg) ** -0.5


def output_multiplier(cfg: Any) -> float:
  """Multiplies the final hidden state before the logits: 1 / m."""
  return 1.0 / width_multiplier(cfg)


def is_hidden(names: Sequence[str | None], leaf: str = "kernel") -> bool:
  """A weight matrix both of whose sides grow with the width (attention, MLP)."""
  axes = [n for n in names if n != "layers"]
  return leaf == "kernel" and len(axes) >= 2 and all(n in WIDTH_AXES for n in axes)


def init_multiplier(cfg: Any, names: Sequence[str | None]) -> float:
  """Multiplies a kernel's init std: m^-1/2 for hidden matrices (variance 1 / fan_in)."""
  return width_multiplier(cfg) ** -0.5 if is_hidden(names) else 1.0


def hidden_lr_multiplier(cfg: Any) -> float:
  """Adam's learning-rate multiplier of hidden matrices: 1 / m, times CompleteP's
  (num_layers / base_num_layers)^(alpha - 1)."""
  multiplier = 1.0 / width_multiplier(cfg)
  if cfg.parametrization == "completep":
    depth = cfg.num_layers / (cfg.base_num_layers or cfg.num_layers)
    multiplier *= depth ** (cfg.depth_alpha - 1.0)
  return multiplier


def lr_multipliers(cfg: Any, boxed_params: Any) -> dict[tuple[str, ...], float]:
  """{parameter path: learning-rate multiplier} for the leaves whose multiplier is not 1, from
  the logical names of `boxed_params` (a `model.init` tree, abstract is enough)."""
  if cfg.parametrization == "standard":
    return {}
  boxed = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
  leaves = jax.tree_util.tree_flatten_with_path(boxed_params, is_leaf=boxed)[0]
  multipliers = {}
  for path, leaf in leaves:
    keys = _keys(path)
    if boxed(leaf) and is_hidden(leaf.names, keys[-1]):
      multipliers[keys] = hidden_lr_multiplier(cfg)
  return multipliers


def _keys(path) -> tuple[str, ...]:
  return tuple(getattr(p, "key", str(p)) for p in path)


def scale_by_multipliers(multipliers: dict[tuple[str, ...], float]) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's learning-rate multiplier (1 where the path is
  not listed). Put last in the chain: it scales what the optimizer proposes, so any optimizer,
  schedule and sharding keeps working; paths outside the model (adapters) stay at 1."""

  def update(updates, state, params=None):
    del params

    def scale(path, update):
      multiplier = multipliers.get(_keys(path), 1.0)
      return update if multiplier == 1.0 else update * multiplier

    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
