"""Fused attention kernels behind `attention.attention`: cuDNN's flash attention on NVIDIA GPUs
(through `jax.nn.dot_product_attention(implementation="cudnn")`) and Splash attention on TPUs
(`jax.experimental.pallas.ops.tpu.splash_attention`).

Each kernel says what it cannot do (`unsupported` returns the reason, or None); the entry point
then runs the blockwise path and logs that reason once. `resolve("auto", platform)` picks the
kernel of the platform the step is compiled for. Layout as `attention.py`: q `[batch, q_length,
heads, head_dim]`, k and v `[batch, kv_length, kv_heads, head_dim]`.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import PartitionSpec

from jtrans import masks

KERNEL_OF_PLATFORM = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}
_logged: set[tuple[str, str]] = set()


def resolve(implementation: str, platform: str | None = None) -> str:
  """A concrete implementation: "auto" becomes the platform's kernel ("splash" on TPU,
  "cudnn" on NVIDIA GPUs) or "blockwise" (CPU, and every other platform); `platform` defaults
  to jax's default backend."""
  if implementation != "auto":
    return implementation
  return KERNEL_OF_PLATFORM.get(platform or jax.default_backend(), "blockwise")


def log_fallback(kernel: str, reason: str) -> None:
  """One line per kernel and reason, when it is traced: the run still works, more slowly."""
  if (kernel, reason) not in _logged:
    _logged.add((kernel, reason))
    logging.warning("attention: %s cannot run %s; using attention_impl=blockwise.", kernel, reason)


def _pattern_unsupported(mask: masks.MaskSpec) -> str | None:
  if mask.global_tokens or mask.sparse is not None:
    return "global tokens or BigBird's block-sparse pattern"
  return None


# ---------------------------------------------------------------- cuDNN (NVIDIA GPUs)


def cudnn_unsupported(
  query: jax.Array, key: jax.Array, mask: masks.MaskSpec, bias: jax.Array | None
) -> str | None:
  """Why cuDNN's flash attention cannot take these inputs (None: it can)."""
  head_dim = query.shape[-1]
  if query.dtype not in (jnp.bfloat16, jnp.float16):
    return f"{query.dtype} inputs (it needs bfloat16 or float16: config.model.dtype)"
  if head_dim % 8 or head_dim > 128:
    return f"head_dim {head_dim} (it needs a multiple of 8, at most 128)"
  if mask.q_segments is not None or mask.kv_segments is not None:
    return "segment ids (packed documents or padding)"
  if bias is not None and (query.shape[1] % 2 or key.shape[1] % 2):
    return "a bias with an odd length"
  return _pattern_unsupported(mask)


def cudnn_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  mask: masks.MaskSpec,
  bias: jax.Array | None = None,
) -> jax.Array:
  """cuDNN flash attention with causality and the window passed as flags (no mask array)."""
  return jax.nn.dot_product_attention(
    query,
    key,
    value,
    bias=bias,
    is_causal=mask.causal,
    local_window_size=mask.window,
    implementation="cudnn",
  )


# ---------------------------------------------------------------- Splash (TPUs)


def _splash_block(length: int) -> int:
  return next(b for b in (512, 256, 128) if length % b == 0)


def splash_unsupported(
  query: jax.Array, key: jax.Array, mask: masks.MaskSpec, bias: jax.Array | None
) -> str | None:
  """Why Splash attention cannot take these inputs (None: it can)."""
  if bias is not None:
    return "a logits bias (T5's relative positions)"
  if query.shape[1] % 128 or key.shape[1] % 128:
    return f"lengths {query.shape[1]} x {key.shape[1]} (it needs multiples of 128)"
  if (mask.q_segments is None) != (mask.kv_segments is None):
    return "segment ids on one side only"
  spec = _spec(("batch", "length", "heads", "kv"))
  if spec[1] is not None:
    return "a sharded length axis"
  if mesh := _mesh():
    heads = spec[2] if isinstance(spec[2], tuple) else (spec[2],) if spec[2] else ()
    shards = math.prod(mesh.shape[a] for a in heads)
    if key.shape[2] % shards:
      return f"{key.shape[2]} key/value heads split {shards} ways"
  return _pattern_unsupported(mask)


def _mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def _spec(logical: tuple[str, ...]) -> PartitionSpec:
  """The mesh axes the current logical-axis rules give these logical axes."""
  spec = nn.logical_to_mesh_axes(logical)
  return PartitionSpec(*(tuple(spec) + (None,) * (len(logical) - len(spec))))


@functools.lru_cache(maxsize=32)
def _splash_kernel(pattern: masks.Pattern, lengths: tuple[int, int], groups: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
    splash_attention_kernel as splash,
  )
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
    splash_attention_mask as splash_mask,
  )

  if pattern.window is not None:
    left, right = pattern.window
    one = splash_mask.LocalMask(lengths, (left, 0 if pattern.causal else right), offset=0)
  elif pattern.causal:
    one = splash_mask.CausalMask(lengths)
  else:
    one = splash_mask.FullMask(lengths)
  bq, bkv = _splash_block(lengths[0]), _splash_block(lengths[1])
  blocks = splash.BlockSizes(
    block_q=bq,
    block_kv=bkv,
    block_kv_compute=bkv,
    block_q_dkv=bq,
    block_kv_dkv=bkv,
    block_kv_dkv_compute=bkv,
    block_q_dq=bq,
    block_kv_dq=bkv,
  )
  return splash.make_splash_mqa(
    splash_mask.MultiHeadMask([one] * groups),
    head_shards=1,
    q_seq_shards=1,
    block_sizes=blocks,
    interpret=interpret,
  )


def splash_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  mask: masks.MaskSpec,
  *,
  interpret: bool = False,
) -> jax.Array:
  """Splash attention, one multi-query kernel call per example and key/value head (its
  `groups` query heads); over a mesh, inside a `shard_map` on the batch and head axes the
  logical-axis rules give (Mosaic kernels are not partitioned automatically). `interpret`
  runs the kernel in Pallas's interpreter (any backend; for tests)."""
  batch, q_len, heads, head_dim = query.shape
  kv_len, kv_heads = key.shape[1], key.shape[2]
  groups = heads // kv_heads
  kernel = _splash_kernel(mask.pattern, (q_len, kv_len), groups, interpret)
  q_seg, kv_seg = mask.q_segments, mask.kv_segments

  def per_shard(q, k, v, q_seg, kv_seg):
    # [b, t, h, d] -> [b, kv_heads, groups, t, d]; Splash does not scale the logits itself.
    b, t = q.shape[:2]
    q = (q * jnp.asarray(head_dim**-0.5, q.dtype)).reshape(b, t, -1, groups, head_dim)
    q = jnp.transpose(q, (0, 2, 3, 1, 4))
    k, v = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))

    def one_example(q, k, v, q_seg, kv_seg):
      from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
        splash_attention_kernel as splash,
      )

      segments = None if q_seg is None else splash.SegmentIds(q=q_seg, kv=kv_seg)
      return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=segments))(q, k, v)

    out = jax.vmap(one_example)(q, k, v, q_seg, kv_seg)  # [b, kv_heads, groups, t, d]
    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, -1, head_dim)

  mesh = _mesh()
  if mesh is None:
    return per_shard(query, key, value, q_seg, kv_seg)
  qkv = _spec(("batch", "length", "heads", "kv"))
  rows = PartitionSpec(qkv[0], None)
  segments = None if q_seg is None else rows
  return jax.shard_map(
    per_shard,
    mesh=mesh,
    in_specs=(qkv, qkv, qkv, segments, segments),
    out_specs=qkv,
    check_vma=False,
  )(query, key, value, q_seg, kv_seg)
