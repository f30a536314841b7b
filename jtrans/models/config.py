"""The typed model description that modules take (never the whole ConfigDict)."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from jtrans import attention

POSITIONS = ("learned", "sinusoidal")
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu", "silu")
FAMILIES = ("decoder",)
# "none": keep every activation; "full": recompute the whole block in the backward pass;
# other names are jax.checkpoint_policies (what to save, the rest is recomputed).
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "nothing_saveable", "everything_saveable")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and options of a Transformer; see configs/base.py for each field's meaning."""
  family: str = "decoder"
  vocab_size: int = 259
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 0  # 0: same as num_heads.
  embed_dim: int = 128
  mlp_dim: int = 512
  max_len: int = 256
  dropout_rate: float = 0.0
  positions: str = "learned"
  tie_embeddings: bool = True
  norm: str = "layernorm"
  activation: str = "gelu"
  use_bias: bool = True
  attention_impl: str = "xla"
  scan_layers: bool = False
  remat: str = "none"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    def fail(key: str, why: str):
      raise ValueError(f"config.model.{key}: {why}")
    if self.family not in FAMILIES:
      fail("family", f"{self.family!r} is not one of {FAMILIES}.")
    if self.num_heads <= 0 or self.embed_dim % self.num_heads:
      fail("num_heads", f"{self.num_heads} heads do not divide embed_dim={self.embed_dim}; "
           "choose num_heads that divides the width (head_dim = embed_dim / num_heads).")
    if self.kv_heads <= 0 or self.num_heads % self.kv_heads:
      fail("num_kv_heads", f"{self.num_kv_heads} key/value heads do not divide num_heads="
           f"{self.num_heads}; use a divisor of num_heads, or 0 for one per query head.")
    if self.positions == "sinusoidal" and self.embed_dim % 2:
      fail("embed_dim", "sinusoidal positions need an even width.")
    for key, allowed in (("positions", POSITIONS), ("norm", NORMS), ("activation", ACTIVATIONS),
                         ("attention_impl", attention.IMPLEMENTATIONS), ("remat", REMAT_POLICIES)):
      if getattr(self, key) not in allowed:
        fail(key, f"{getattr(self, key)!r} is not one of {allowed}.")

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> "ModelConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in model.items() if k in fields}
    values["dtype"] = jnp.dtype(values.get("dtype", "float32"))
    values["param_dtype"] = jnp.dtype(values.get("param_dtype", "float32"))
    return cls(**values)
