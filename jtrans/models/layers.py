"""Transformer building blocks as small Linen modules wired from the pure functions.

Every family (decoder, encoder, encoder-decoder, ViT) is built from the one `Block` here:
self-attention, optional cross-attention, MLP, each with a pre- or post-norm residual.
Every parameter carries logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`,
`layers`), mapped onto a device mesh by `config.mesh.rules`. Activations are
`[batch, length, embed]`.

Decoding (`decode=True`) keeps a KV cache in the "cache" collection: self-attention appends
each call's keys and values at the cache index; cross-attention projects the encoder output
once, on the call that passes it, and reads the cached projections afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import attention, blockwise, masks, parametrization, positional
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
  kernel_init: nn.initializers.Initializer  # Carries the kernel's logical axis names.
  bias_axes: tuple[str | None, ...]  # The trailing kernel axes that the output keeps.
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  accumulate_dtype: jnp.dtype | None = None  # The product's accumulation and output dtype.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, self.kernel_shape, self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = jnp.einsum(self.equation, x, kernel, preferred_element_type=self.accumulate_dtype)
    if self.use_bias:
      bias_shape = self.kernel_shape[-len(self.bias_axes) :]
      bias = self.param("bias", zeros(self.bias_axes), bias_shape, self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


def make_norm(cfg: ModelConfig, name: str) -> Callable[[jax.Array], jax.Array]:
  """LayerNorm or RMSNorm (statistics in float32) with a logically named scale; "none" is the
  identity (the grokking models of Nanda et al. 2023 have no norms)."""
  if cfg.norm == "none":
    return lambda x: x
  ones = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(
      epsilon=cfg.norm_epsilon,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      scale_init=ones,
      name=name,
    )
  return nn.LayerNorm(
    epsilon=cfg.norm_epsilon,
    dtype=cfg.dtype,
    param_dtype=cfg.param_dtype,
    use_bias=cfg.use_bias,
    scale_init=ones,
    bias_init=zeros(("embed",)),
    name=name,
  )


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=True)
  if name == "gelu_exact":
    return lambda x: nn.gelu(x, approximate=False)
  if name == "quick_gelu":
    return lambda x: x * nn.sigmoid(1.702 * x)
  return getattr(nn, name)


def weight_init(
  cfg: ModelConfig, names: tuple[str | None, ...], in_dims: int = 1, residual: bool = False
) -> nn.initializers.Initializer:
  """Normal init of a weight whose first `in_dims` axes are its inputs (fan in) and the rest its
  outputs: std `cfg.init_std` (GPT-2 and BERT: 0.02), or Glorot's sqrt(2 / (fan_in + fan_out))
  when it is 0 (Vaswani et al.: Xavier init, whose variance no longer shrinks the sub-layers of
  a narrow model). A `residual` projection (it writes into the residual stream) has its std
  divided by sqrt(2 x layers) when `cfg.scale_residual_init` (GPT-2's scaled init). Under muP
  a hidden matrix's std is also divided by sqrt(width / base width) (parametrization.py)."""

  def initializer(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    fan_in, fan_out = math.prod(shape[:in_dims]), math.prod(shape[in_dims:])
    stddev = cfg.init_std or (2.0 / (fan_in + fan_out)) ** 0.5
    stddev *= parametrization.init_multiplier(cfg, names)
    if residual and cfg.scale_residual_init:
      stddev /= (2 * parametrization.residual_init_layers(cfg)) ** 0.5
    return stddev * jax.random.normal(key, shape, dtype)

  return nn.with_logical_partitioning(initializer, names)


def dense(
  cfg: ModelConfig,
  features: int,
  axes: tuple[str | None, str | None],
  name: str,
  residual: bool = False,
  use_bias: bool | None = None,
  zero_init: bool = False,
) -> nn.Dense:
  """`zero_init`: the kernel starts at 0 (a classifier head that starts from uniform odds)."""
  use_bias = cfg.use_bias if use_bias is None else use_bias
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=cfg.dtype,
    param_dtype=cfg.param_dtype,
    kernel_init=zeros(axes) if zero_init else weight_init(cfg, axes, residual=residual),
    bias_init=zeros(axes[-1:]),
    name=name,
  )


class Mlp(nn.Module):
  """Position-wise feed-forward, plain or gated: `[batch, length, embed]` in and out."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    act = activation(cfg.activation)
    if cfg.gated_mlp:
      h = act(dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_gate")(x))
      h = h * dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_up")(x)
    else:
      h = act(dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x))
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    return dense(cfg, cfg.embed_dim, ("mlp", "embed"), "wo", residual=True)(h)


def pattern(cfg: ModelConfig, causal: bool) -> dict:
  """The self-attention pattern of config.model as `masks.MaskSpec` fields: causality; the
  (left, right) key window of attention_window (the `w` previous keys and the query's own,
  Mistral's sliding window, when causal; `w` each side, Longformer, else); global tokens; and
  BigBird's layout (attention_sparse_*)."""
  sparse = None
  if cfg.attention_sparse_block:
    sparse = masks.Sparse(
      cfg.attention_sparse_block,
      cfg.attention_sparse_window,
      cfg.attention_sparse_global,
      cfg.attention_sparse_random,
      cfg.attention_sparse_seed,
    )
  w = cfg.attention_window
  return {
    "causal": causal,
    "window": (w, 0 if causal else w) if w else None,
    "global_tokens": cfg.attention_global_tokens,
    "sparse": sparse,
  }


class Attention(nn.Module):
  """Multi-head, grouped-query or multi-query attention: projections around the pure
  `dot_product_attention`, with rotary positions, a relative position bias and a KV cache.

  Self-attention takes keys and values from `x`; cross-attention (`cross=True`) from
  `context`, the encoder output `[batch, kv_length, embed]`.
  """

  cfg: ModelConfig
  causal: bool = False  # For the relative position buckets and the cache's causal mask.
  cross: bool = False
  decode: bool = False

  def _project(self, x: jax.Array, heads: int, name: str) -> jax.Array:
    """`[batch, length, embed] -> [batch, length, heads, head_dim]`."""
    cfg = self.cfg
    return Einsum(
      "ble,ehd->blhd",
      (cfg.embed_dim, heads, cfg.head_dim),
      weight_init(cfg, ("embed", "heads", "kv")),
      ("heads", "kv"),
      cfg.use_bias,
      cfg.dtype,
      cfg.param_dtype,
      name=name,
    )(x)

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    mask: masks.MaskSpec | jax.Array | None,
    *,
    positions: jax.Array | None = None,
    context: jax.Array | None = None,
    relative_table: jax.Array | None = None,
  ) -> jax.Array:
    """Args:
    x: `[batch, length, embed]`.
    mask: which keys each query sees: an `masks.MaskSpec`, or (when decoding) a boolean
      array broadcastable to `[batch, heads, length, kv_length]` over the cache's slots, to
      which the cache's own causal mask is added here.
    positions: int `[batch, length]`, for rotary positions and the relative bias.
    context: cross-attention's `[batch, kv_length, embed]`; when decoding, None reads the
      projections cached by the call that passed it.
    relative_table: `[num_buckets, heads]` for T5's relative position bias.
    """
    cfg = self.cfg
    q = self._project(x, cfg.num_heads, "query")
    if self.cross:
      k, v = self._cross_keys_values(context)
    else:
      k, v = self._project(x, cfg.kv_heads, "key"), self._project(x, cfg.kv_heads, "value")
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    if cfg.positions == "rotary" and not self.cross:
      q = positional.rotary(q, positions, cfg.rope_theta)
      k = positional.rotary(k, positions, cfg.rope_theta)
    if cfg.parametrization != "standard":  # muP's 1/head_dim logits, through any kernel.
      q = q * jnp.asarray(parametrization.query_multiplier(cfg), q.dtype)
    q_positions = k_positions = positions
    if self.decode and not self.cross:
      if cfg.attention_global_tokens or cfg.attention_sparse_block:
        raise ValueError(
          "config.model.attention_global_tokens / attention_sparse_block: the KV cache keeps "
          "only causal and sliding-window attention; decode without the cache "
          "(jtrans.decoding use_cache=False) or set both to 0."
        )
      append = self._append_to_ring if cfg.attention_window else self._append_to_cache
      cached = append(k, v, mask)
      if cached is not None:
        k, v, q_positions, k_positions, mask = cached
    if not self.cross and self.has_variable("params", "prefix_key"):
      k, v, mask = self._with_prefix(k, v, mask, x.shape[1])
    bias = None
    if relative_table is not None and not self.cross:
      bias = positional.relative_position_bias(
        relative_table,
        q_positions,
        k_positions,
        bidirectional=not self.causal,
        max_distance=cfg.relative_max_distance,
      )
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    if isinstance(mask, masks.MaskSpec) or mask is None:
      blocks = blockwise.Blocks(cfg.attention_block_q, cfg.attention_block_kv)
      out = attention.attention(
        q, k, v, mask, bias, implementation=cfg.attention_impl, blocks=blocks
      )
    else:  # A decode step over the cache: a handful of queries, the dense path.
      impl = "jax" if cfg.attention_impl == "jax" else "xla"
      out = attention.dot_product_attention(q, k, v, mask, bias, implementation=impl)
    return Einsum(
      "blhd,hde->ble",
      (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
      weight_init(cfg, ("heads", "kv", "embed"), in_dims=2, residual=True),
      ("embed",),
      cfg.use_bias,
      cfg.dtype,
      cfg.param_dtype,
      name="out",
    )(out)

  def _with_prefix(self, k: jax.Array, v: jax.Array, mask, length: int) -> tuple:
    """Prefix tuning (jtrans/finetune/prefix.py): the learned `prefix_key` / `prefix_value`
    `[P, kv_heads, head_dim]` go before the keys and values, and every query sees them. The
    mask becomes a dense array (the dense attention path), with the prefix's columns True."""
    batch, slots = k.shape[0], k.shape[1]
    pk, pv = (self.get_variable("params", n) for n in ("prefix_key", "prefix_value"))
    pk = jnp.broadcast_to(pk.astype(k.dtype), (batch, *pk.shape))
    pv = jnp.broadcast_to(pv.astype(v.dtype), (batch, *pv.shape))
    if isinstance(mask, masks.MaskSpec):
      mask = mask.dense(length, slots)
    mask = jnp.ones((batch, 1, length, slots), bool) if mask is None else mask
    mask = jnp.broadcast_to(mask, (batch, mask.shape[1], length, slots))
    seen = jnp.ones((*mask.shape[:3], pk.shape[1]), bool)
    return (
      jnp.concatenate([pk, k], axis=1),
      jnp.concatenate([pv, v], axis=1),
      jnp.concatenate([seen, mask], axis=-1),
    )

  def _cross_keys_values(self, context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    if context is not None:
      k = self._project(context, self.cfg.kv_heads, "key")
      v = self._project(context, self.cfg.kv_heads, "value")
      if self.decode:
        self.variable("cache", "cached_cross_key", lambda: k).value = k
        self.variable("cache", "cached_cross_value", lambda: v).value = v
      return k, v
    if not (self.decode and self.has_variable("cache", "cached_cross_key")):
      raise ValueError(
        "cross-attention needs the encoder output (context), or a decode cache "
        "filled by a call that passed it."
      )
    return self.get_variable("cache", "cached_cross_key"), self.get_variable(
      "cache", "cached_cross_value"
    )

  def _append_to_cache(self, k: jax.Array, v: jax.Array, mask):
    """Writes this call's `[batch, length, kv_heads, head_dim]` keys and values at the cache
    index; returns the whole cache, the query and key slots, and `mask` (a `MaskSpec` or a
    boolean array over the cache's slots) with causality over the slots added.

    The first call (from `init`) only creates the cache, with as many slots as it has
    tokens, and returns None: that call attends as a normal forward pass would. Writing past
    the last slot cannot fail inside jit (XLA clamps the index and overwrites the end), so
    callers size the cache for every token they will feed, as jtrans.decoding does.
    """
    initialized = self.has_variable("cache", "cached_key")
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return None
    start = index.value
    cached_k.value = jax.lax.dynamic_update_slice(
      cached_k.value, k.astype(cached_k.value.dtype), (0, start, 0, 0)
    )
    cached_v.value = jax.lax.dynamic_update_slice(
      cached_v.value, v.astype(cached_v.value.dtype), (0, start, 0, 0)
    )
    index.value = start + k.shape[1]
    batch, length = k.shape[:2]
    slots = cached_k.value.shape[1]
    if isinstance(mask, masks.MaskSpec):
      mask = mask.dense(length, slots)
    q_slots = jnp.broadcast_to(start + jnp.arange(length), (batch, length))
    k_slots = jnp.broadcast_to(jnp.arange(slots), (batch, slots))
    cache_mask = k_slots[:, None, None, :] <= q_slots[:, None, :, None]
    return (
      cached_k.value,
      cached_v.value,
      q_slots,
      k_slots,
      masks.combine_masks(mask, cache_mask),
    )

  def _append_to_ring(self, k: jax.Array, v: jax.Array, mask: jax.Array | None):
    """`_append_to_cache` for a causal window of w keys back (config.model.attention_window):
    the cache is a ring of min(w, slots) entries, slot s at entry s % size, so decoding keeps
    w keys per layer however long it runs. This call's queries attend over the ring and their
    own keys; then the last of those keys overwrite the oldest entries.

    `mask`, when given, is a boolean array over the caller's slots `[..., slots]` (the left
    padding of shorter prompts); it is read at the slots the ring holds. Returns the keys and
    values attended, query and key slots, and the mask.
    """
    window = self.cfg.attention_window
    batch, length = k.shape[:2]
    initialized = self.has_variable("cache", "cached_key")
    size = min(window, length)  # At `init`, `length` is every slot the caller will feed.
    ring_k = self.variable("cache", "cached_key", jnp.zeros, (batch, size, *k.shape[2:]), k.dtype)
    ring_v = self.variable("cache", "cached_value", jnp.zeros, (batch, size, *v.shape[2:]), v.dtype)
    # Slot + 1 of each entry, 0 = empty (so a cache of zeros is an empty one).
    held = self.variable("cache", "cache_slots", jnp.zeros, (size,), jnp.int32)
    index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return None
    start, size = index.value, ring_k.value.shape[1]
    new_slots = start + jnp.arange(length)
    keys = jnp.concatenate([ring_k.value, k.astype(ring_k.value.dtype)], 1)
    values = jnp.concatenate([ring_v.value, v.astype(ring_v.value.dtype)], 1)
    k_slots = jnp.concatenate([held.value - 1, new_slots])  # -1: empty entry.
    q, key = new_slots[:, None], k_slots[None, :]
    window_mask = (key >= 0) & (key <= q) & (key >= q - window)
    if mask is not None:
      mask = jnp.take(mask, jnp.maximum(k_slots, 0), axis=-1, mode="clip")
    kept = min(length, size)  # The newest keys, at distinct entries.
    entries = (start + length - kept + jnp.arange(kept)) % size
    ring_k.value = ring_k.value.at[:, entries].set(k[:, length - kept :].astype(ring_k.value.dtype))
    ring_v.value = ring_v.value.at[:, entries].set(v[:, length - kept :].astype(ring_v.value.dtype))
    held.value = held.value.at[entries].set(new_slots[length - kept :] + 1)
    index.value = start + length
    return (
      keys,
      values,
      jnp.broadcast_to(new_slots, (batch, length)),
      jnp.broadcast_to(k_slots, (batch, k_slots.shape[0])),
      masks.combine_masks(mask, window_mask[None, None]),
    )


class BlockInputs(NamedTuple):
  """What every block of a stack receives besides the residual stream (broadcast by scan)."""

  mask: masks.MaskSpec | jax.Array | None = None  # Self-attention (dense: decoding).
  positions: jax.Array | None = None  # int `[batch, length]`.
  context: jax.Array | None = None  # Encoder output `[batch, source_length, embed]`.
  context_mask: masks.MaskSpec | None = None  # Cross-attention: the source's padding.
  relative_table: jax.Array | None = None  # `[num_buckets, heads]` (T5).


class Block(nn.Module):
  """Self-attention, optional cross-attention and an MLP, each a residual branch normed
  before it ("pre": x + f(norm(x))) or after the sum ("post": norm(x + f(x)))."""

  cfg: ModelConfig
  causal: bool = False
  cross: bool = False
  deterministic: bool = True  # False enables dropout (needs a 'dropout' rng).
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, inputs: BlockInputs) -> jax.Array:
    cfg = self.cfg
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)

    def residual(x, branch, name):
      if cfg.norm_position == "pre":
        h = dropout(branch(make_norm(cfg, f"{name}_norm")(x)))
        if cfg.parametrization == "completep":
          h = h * jnp.asarray(parametrization.branch_multiplier(cfg), h.dtype)
        return x + h
      return make_norm(cfg, f"{name}_norm")(x + dropout(branch(x)))

    x = residual(
      x,
      lambda h: Attention(cfg, self.causal, decode=self.decode, name="attention")(
        h, inputs.mask, positions=inputs.positions, relative_table=inputs.relative_table
      ),
      "attention",
    )
    if self.cross:
      x = residual(
        x,
        lambda h: Attention(cfg, cross=True, decode=self.decode, name="cross_attention")(
          h, inputs.context_mask, context=inputs.context
        ),
        "cross_attention",
      )
    x = residual(x, Mlp(cfg, name="mlp"), "mlp")
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def remat(block: type[nn.Module], policy: str) -> type[nn.Module]:
  """The block class wrapped so that its activations are recomputed per `policy`."""
  if policy == "none":
    return block
  return nn.remat(
    block, policy=None if policy == "full" else getattr(jax.checkpoint_policies, policy)
  )


class ScannedBlock(nn.Module):
  """A block with the scan signature `(carry, broadcast) -> (carry, None)`."""

  cfg: ModelConfig
  causal: bool = False
  cross: bool = False
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, inputs: BlockInputs) -> tuple[jax.Array, None]:
    block = remat(Block, self.cfg.remat)
    return block(self.cfg, self.causal, self.cross, self.deterministic, self.decode, name="block")(
      x, inputs
    ), None


class Stack(nn.Module):
  """`num_layers` blocks, unrolled or as one `nn.scan` (parameters stacked on a leading
  `layers` axis: compile time no longer grows with depth), then the final norm of pre-norm
  models. Owns T5's relative position table, shared by its layers."""

  cfg: ModelConfig
  num_layers: int
  causal: bool = False
  cross: bool = False
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, inputs: BlockInputs) -> jax.Array:
    cfg = self.cfg
    if cfg.positions == "relative":
      table = self.param(
        "relative_bias",
        init((None, "heads"), 0.02),
        (cfg.relative_buckets, cfg.num_heads),
        cfg.param_dtype,
      )
      inputs = inputs._replace(relative_table=table)
    args = (cfg, self.causal, self.cross, self.deterministic, self.decode)
    if cfg.scan_layers:
      stack = nn.scan(
        ScannedBlock,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast,
        length=self.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = stack(*args, name="layers")(x, inputs)
    else:
      block = remat(Block, cfg.remat)
      for i in range(self.num_layers):
        x = block(*args, name=f"block_{i}")(x, inputs)
    if cfg.norm_position == "pre":
      x = make_norm(cfg, "final_norm")(x)
    return x


class Embed(nn.Module):
  """Token (+ token-type, + absolute position) embeddings, and the tied output projection.

  `[batch, length]` ids -> `[batch, length, embed]`; `attend` maps back to vocabulary logits.
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    # Embeddings that are scaled by sqrt(d) start at std d^-0.5 (Vaswani et al., fairseq), so
    # that tokens enter at unit scale, level with the sinusoidal positions; the others at the
    # weight matrices' init_std (0.02 under Glorot, which has no fan for a table).
    stddev = cfg.embed_dim**-0.5 if cfg.scale_embeddings else (cfg.init_std or 0.02)
    self.token = nn.Embed(
      cfg.vocab_size,
      cfg.embed_dim,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      embedding_init=init(("vocab", "embed"), stddev),
      name="token_embed",
    )
    if cfg.positions == "learned":
      self.position = nn.Embed(
        cfg.max_len,
        cfg.embed_dim,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        embedding_init=init((None, "embed"), cfg.position_init_std),
        name="position_embed",
      )
    if cfg.type_vocab_size:
      self.token_type = nn.Embed(
        cfg.type_vocab_size,
        cfg.embed_dim,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        embedding_init=init((None, "embed")),
        name="type_embed",
      )
    if cfg.embed_norm:
      self.norm = make_norm(self.cfg, "embed_norm")

  def __call__(
    self,
    tokens: jax.Array,
    positions: jax.Array,
    token_types: jax.Array | None = None,
    vectors: jax.Array | None = None,
  ) -> jax.Array:
    """`vectors` `[batch, length, embed]`: used in place of the tokens' embeddings (prompt
    tuning's soft prompt), positions and the rest added as for tokens."""
    cfg = self.cfg
    x = self.token(tokens) if vectors is None else vectors.astype(cfg.dtype)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.embed_dim**0.5, x.dtype)
    if cfg.positions == "learned":
      x = x + self.position(positions)
    elif cfg.positions == "sinusoidal":
      x = x + positional.sinusoidal(positions, cfg.embed_dim).astype(x.dtype)
    if cfg.type_vocab_size:
      x = x + self.token_type(jnp.zeros_like(tokens) if token_types is None else token_types)
    if cfg.embed_norm:
      x = self.norm(x)
    return x

  def attend(self, x: jax.Array) -> jax.Array:
    return self.token.attend(x)


class Logits(nn.Module):
  """Final hidden states `[batch, length, embed]` -> float32 logits `[batch, length, vocab]`:
  the tied embedding (scaled by `logits_scale`) or an output matrix, plus an optional bias.

  The product takes its inputs in the compute dtype but accumulates and returns float32
  (`preferred_element_type`), so a bfloat16 model's softmax and loss see float32 logits.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, embed: Embed) -> jax.Array:
    cfg = self.cfg
    if cfg.parametrization != "standard":
      x = x * jnp.asarray(parametrization.output_multiplier(cfg), x.dtype)
    if cfg.tie_embeddings:
      x = x * jnp.asarray(cfg.logits_scale, x.dtype)
      table = embed.token.embedding  # [vocab, embed]
      logits = jnp.einsum(
        "...e,ve->...v", x, table.astype(cfg.dtype), preferred_element_type=jnp.float32
      )
    else:
      logits = Einsum(
        "...e,ev->...v",
        (cfg.embed_dim, cfg.vocab_size),
        weight_init(cfg, ("embed", "vocab")),
        (),
        use_bias=False,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        accumulate_dtype=jnp.float32,
        name="output",
      )(x)
    if cfg.output_bias:
      bias = self.param("bias", zeros(("vocab",)), (cfg.vocab_size,), cfg.param_dtype)
      logits = logits + bias.astype(jnp.float32)
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def default_positions(
  tokens: jax.Array, positions: jax.Array | None, decoding: bool = False
) -> jax.Array:
  """0..length-1 for every row unless given (packed rows restart them per document).

  A decode step has no default: its tokens sit at the cache index, which only the caller
  tracks (0..length-1 would silently be wrong after the first call)."""
  if positions is None and decoding:
    raise ValueError(
      "decode=True needs positions: int [batch, length], the slots the tokens "
      "take in the cache (jtrans.decoding passes them)."
    )
  if positions is None:
    return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape[:2])
  return positions
