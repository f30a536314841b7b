"""Transformer building blocks as small Linen modules wired from the pure functions.

Every parameter carries logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`),
mapped onto a device mesh by the rules in `config.mesh.rules`. Activations are
`[batch, length, embed]`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import attention
from jtrans.models.config import ModelConfig


def init(names: tuple[str | None, ...], stddev: float = 0.02) -> nn.initializers.Initializer:
  """A normal(stddev) initializer tagged with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def zeros(names: tuple[str | None, ...]) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class Einsum(nn.Module):
  """`einsum(equation, x, kernel) + bias` with logically named parameters.

  Used for the head-shaped attention projections: flax's DenseGeneral initialises a flat
  kernel and reshapes it, which clashes with 3-axis logical names under a mesh.
  """
  equation: str
  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  bias_axes: tuple[str | None, ...]  # The trailing kernel axes that the output keeps.
  use_bias: bool
  stddev: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", init(self.kernel_axes, self.stddev), self.kernel_shape,
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = jnp.einsum(self.equation, x, kernel)
    if self.use_bias:
      bias_shape = self.kernel_shape[-len(self.bias_axes):]
      bias = self.param("bias", zeros(self.bias_axes), bias_shape, self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


def make_norm(cfg: ModelConfig, name: str) -> nn.Module:
  """LayerNorm or RMSNorm (statistics in float32) with a logically named scale."""
  ones = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=1e-6, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      scale_init=ones, name=name)
  return nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      use_bias=cfg.use_bias, scale_init=ones, bias_init=zeros(("embed",)),
                      name=name)


def output_stddev(cfg: ModelConfig) -> float:
  """GPT-2's scaled init for projections that write into the residual stream."""
  return 0.02 / (2 * cfg.num_layers) ** 0.5


class Mlp(nn.Module):
  """Position-wise feed-forward: `[batch, length, embed] -> [batch, length, embed]`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    h = nn.Dense(cfg.mlp_dim, use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                 kernel_init=init(("embed", "mlp")), bias_init=zeros(("mlp",)), name="wi")(x)
    h = getattr(nn, cfg.activation)(h)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    return nn.Dense(cfg.embed_dim, use_bias=cfg.use_bias, dtype=cfg.dtype,
                    param_dtype=cfg.param_dtype, kernel_init=init(("mlp", "embed"), output_stddev(cfg)),
                    bias_init=zeros(("embed",)), name="wo")(h)


class Attention(nn.Module):
  """Multi-head (or grouped-query) self-attention: projections around the pure attention."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """x: `[batch, length, embed]`; mask broadcastable to `[batch, heads, length, length]`."""
    cfg = self.cfg

    def project(heads: int, name: str) -> jax.Array:
      """`[batch, length, embed] -> [batch, length, heads, head_dim]`."""
      return Einsum("ble,ehd->blhd", (cfg.embed_dim, heads, cfg.head_dim), ("embed", "heads", "kv"),
                    ("heads", "kv"), cfg.use_bias, 0.02, cfg.dtype, cfg.param_dtype, name=name)(x)

    q = project(cfg.num_heads, "query")
    k = project(cfg.kv_heads, "key")
    v = project(cfg.kv_heads, "value")
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    out = attention.dot_product_attention(q, k, v, mask, implementation=cfg.attention_impl)
    return Einsum("blhd,hde->ble", (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
                  ("heads", "kv", "embed"), ("embed",), cfg.use_bias, output_stddev(cfg),
                  cfg.dtype, cfg.param_dtype, name="out")(out)


class DecoderBlock(nn.Module):
  """Pre-LN block: x + Attn(Norm(x)), then + Mlp(Norm(x)). `[batch, length, embed]` in and out."""
  cfg: ModelConfig
  deterministic: bool = True  # False enables dropout (needs a 'dropout' rng).

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    cfg = self.cfg
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
    h = Attention(cfg, name="attention")(make_norm(cfg, "attention_norm")(x), mask)
    x = x + dropout(h)
    h = Mlp(cfg, name="mlp")(make_norm(cfg, "mlp_norm")(x))
    x = x + dropout(h)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def remat(block: type[nn.Module], policy: str) -> type[nn.Module]:
  """The block class wrapped so that its activations are recomputed per `policy`."""
  if policy == "none":
    return block
  return nn.remat(block, policy=None if policy == "full" else getattr(jax.checkpoint_policies, policy))


class ScannedBlock(nn.Module):
  """A block with the scan signature `(carry, broadcast) -> (carry, None)`."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, None]:
    block = remat(DecoderBlock, self.cfg.remat)
    return block(self.cfg, self.deterministic, name="block")(x, mask), None


class BlockStack(nn.Module):
  """`num_layers` decoder blocks, unrolled or as one `nn.scan` (parameters stacked on a
  leading `layers` axis: compile time no longer grows with depth)."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    cfg = self.cfg
    if cfg.scan_layers:
      stack = nn.scan(ScannedBlock, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast, length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, self.deterministic, name="layers")(x, mask)
      return x
    block = remat(DecoderBlock, cfg.remat)
    for i in range(cfg.num_layers):
      x = block(cfg, self.deterministic, name=f"block_{i}")(x, mask)
    return x
