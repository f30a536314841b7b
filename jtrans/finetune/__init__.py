"""Fine-tuning: which parameters train (`config.finetune`), and LoRA adapters (`lora.py`).

A run's parameters stay one tree. Freezing is by path: `trainable` regexes on "/"-joined leaf
paths ("decoder/block_0/attention/query/kernel", "lora/decoder/block_0/attention/query/a")
choose the leaves that train; the step differentiates those alone, and the optimizer
(`optim.make_optimizer`) keeps state for them alone. Frozen leaves may be stored in bfloat16
(`frozen_dtype`) while the trained ones stay float32. LoRA adds its adapters under the tree's
`lora` key; the model always sees the merged weights (`lora.merge`), so every family takes
them with no change to its modules. Prefix tuning (`prefix.py`) adds keys and values under
`prefix`, which `prefix.merge` hands to the decoder's attention modules; prompt tuning
(`prompt.py`) a soft prompt under `prompt`, which becomes such a prefix. `model_params` does
all three.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

METHODS = ("full", "lora", "prefix", "prompt")
# Params-tree keys of trained additions (lora.KEY, prefix.KEY, prompt.KEY).
ADAPTER_KEYS = ("lora", "prefix", "prompt")
VIRTUAL_TOKEN_METHODS = ("prefix", "prompt")  # Keys and values ahead of every sequence.
FROZEN_DTYPES = ("", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class Settings:
  """config.finetune, checked (hashable: the steps take it as a static setting)."""

  method: str = "full"
  trainable: tuple[
    str, ...
  ] = ()  # Regexes on leaf paths; () = every leaf ("full") or the adapters.
  frozen_dtype: str = ""  # "bfloat16": frozen leaves stored in it; "": as initialised.
  lora_targets: str = ""  # Regex on kernel module paths ("attention/(query|value)$").
  lora_rank: int = 8
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0  # Dropout on LoRA's input while training.
  lora_from: str = ""  # A PEFT LoRA directory the adapters start from.
  prefix_length: int = 16  # Prefix tuning's keys and values per layer; prompt tuning's vectors.
  prefix_hidden: int = 512  # Its reparametrisation MLP's width; 0 = keys and values direct.

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Settings:
    f = config.finetune
    settings = cls(
      method=f.method,
      trainable=tuple(r.strip() for r in f.trainable.split(",") if r.strip()),
      frozen_dtype=f.frozen_dtype,
      lora_targets=f.lora_targets,
      lora_rank=f.lora_rank,
      lora_alpha=f.lora_alpha,
      lora_dropout=f.lora_dropout,
      lora_from=f.lora_from,
      prefix_length=f.prefix_length,
      prefix_hidden=f.prefix_hidden,
    )
    settings.check()
    return settings

  def check(self) -> None:
    if self.method not in METHODS:
      raise ValueError(f"config.finetune.method={self.method!r} is not one of {METHODS}.")
    if self.frozen_dtype not in FROZEN_DTYPES:
      raise ValueError(
        f"config.finetune.frozen_dtype={self.frozen_dtype!r} is not one of {FROZEN_DTYPES}."
      )
    for pattern in self.trainable + ((self.lora_targets,) if self.lora_targets else ()):
      try:
        re.compile(pattern)
      except re.error as e:
        raise ValueError(f"config.finetune: {pattern!r} is not a regular expression ({e}).") from e
    if not 0.0 <= self.lora_dropout < 1.0:
      raise ValueError(f"config.finetune.lora_dropout={self.lora_dropout} must be in [0, 1).")
    if self.lora_from and self.method != "lora":
      raise ValueError("config.finetune.lora_from needs config.finetune.method='lora'.")
    if self.method in VIRTUAL_TOKEN_METHODS and (self.prefix_length < 1 or self.prefix_hidden < 0):
      raise ValueError(
        f"config.finetune.method={self.method!r} needs prefix_length >= 1 and prefix_hidden "
        ">= 0 (0: the keys and values trained directly)."
      )
    if self.method == "lora" and (not self.lora_targets or self.lora_rank < 1):
      raise ValueError(
        "config.finetune.method='lora' needs lora_targets (a regex on kernel paths, e.g. "
        "'attention/(query|value)$') and lora_rank >= 1."
      )

  @property
  def virtual_tokens(self) -> int:
    """Positions a prefix or soft prompt takes ahead of every sequence (0 for other methods)."""
    return self.prefix_length if self.method in VIRTUAL_TOKEN_METHODS else 0

  @property
  def freezes(self) -> bool:
    """Whether some leaves do not train (otherwise the step is plain training)."""
    return self.method != "full" or bool(self.trainable)

  def is_trainable(self, path: str) -> bool:
    if self.trainable:
      return any(re.search(pattern, path) for pattern in self.trainable)
    return self.method == "full" or path.split("/", 1)[0] in ADAPTER_KEYS


def model_params(
  params: Any, settings: Settings | None, model: Any = None, training: bool = False
) -> Any:
  """What the model runs on: LoRA adapters merged into their kernels (`lora.merge`; placed
  beside them, `lora.place`, for a training step with LoRA dropout, run under
  `lora.dropout`), a soft prompt turned into its keys and values by `model`
  (`prompt.to_prefix`), a prefix placed in its attention modules (`prefix.merge`); `params`
  itself without any."""
  from jtrans.finetune import lora, prefix, prompt  # pylint: disable=g-import-not-at-top

  if training and settings is not None and settings.lora_dropout:
    params = lora.place(params, settings)
  else:
    params = lora.merge(params, settings)
  if prompt.KEY in params:
    if model is None:
      raise ValueError("a soft prompt (prompt tuning) needs the model to become keys and values.")
    params = prompt.to_prefix(model, params)
  return prefix.merge(params)


def path_of(key_path: tuple) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in key_path)


def trainable_mask(params: Any, settings: Settings) -> Any:
  """The params tree with True where the leaf trains."""
  return jax.tree_util.tree_map_with_path(lambda p, _: settings.is_trainable(path_of(p)), params)


def split(params: Any, settings: Settings) -> tuple[Any, Any]:
  """(trained, frozen): two trees of the params' structure, each None where the other holds
  the leaf; `combine` joins them. The step differentiates `trained` alone."""
  mask = trainable_mask(params, settings)
  trained = jax.tree.map(lambda x, m: x if m else None, params, mask)
  frozen = jax.tree.map(lambda x, m: None if m else x, params, mask)
  return trained, frozen


def combine(trained: Any, frozen: Any) -> Any:
  return jax.tree.map(
    lambda a, b: b if a is None else a, trained, frozen, is_leaf=lambda x: x is None
  )


def fill_frozen(grads: Any, params: Any) -> Any:
  """Gradients of `split`'s trained part -> the whole tree, zeros at the frozen leaves (the
  optimizer's `set_to_zero` branch ignores them; XLA folds them away)."""
  return jax.tree.map(
    lambda g, p: jnp.zeros(p.shape, p.dtype) if g is None else g,
    grads,
    params,
    is_leaf=lambda x: x is None,
  )


def store_frozen(params: Any, settings: Settings) -> Any:
  """Frozen leaves cast to `frozen_dtype` (the trained ones keep theirs)."""
  if not settings.frozen_dtype or not settings.freezes:
    return params
  dtype = jnp.dtype(settings.frozen_dtype)
  mask = trainable_mask(params, settings)
  return jax.tree.map(lambda x, m: x if m else x.astype(dtype), params, mask)


def trained_share(params: Any, settings: Settings) -> float:
  """The trained fraction of the parameters (1.0 when nothing is frozen): what the step's
  weight gradients cost (flops.train_flops_per_token)."""
  if not settings.freezes:
    return 1.0
  trained, total = count(params, settings)
  return trained / total


def count(params: Any, settings: Settings) -> tuple[int, int]:
  """(trained, total) parameter counts."""
  mask = trainable_mask(params, settings)
  sizes = jax.tree.map(lambda x: int(x.size), params)
  trained = sum(s for s, m in zip(jax.tree.leaves(sizes), jax.tree.leaves(mask)) if m)
  return trained, sum(jax.tree.leaves(sizes))
