"""FLOP accounting: parameters, training FLOPs per token, peak FLOP/s and MFU.

Counts are of scalars (parameters) and floating-point operations (a multiply-add is 2 FLOPs),
per token of a training row of `seq_len` tokens, forward plus backward.
"""

from __future__ import annotations

import dataclasses
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans.models import build_model, example_inputs
from jtrans.models.config import ModelConfig

# Dense bfloat16 peak FLOP/s per chip, by the start of `device.device_kind`.
KNOWN_PEAKS = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100": 312e12,
}


def mlp_matrices(cfg: ModelConfig) -> int:
  """Weight matrices of one MLP: in and out, plus the gate of a gated MLP."""
  return 3 if cfg.gated_mlp else 2


def block_matmul_params(cfg: ModelConfig) -> int:
  """Weights of the blocks, all of which every position multiplies."""
  d, q, kv = cfg.embed_dim, cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
  per_layer = d * q * 2 + d * kv * 2 + mlp_matrices(cfg) * d * cfg.mlp_dim  # q, out, k, v, mlp
  return cfg.num_layers * per_layer


def matmul_params(cfg: ModelConfig) -> float:
  """Weights that take part in a matmul per position: the blocks plus, for token models, the
  output projection; for image models the patch embedding, and what runs once per image (the
  head, CLIP's projection, DiT's conditioning) spread over the image's positions. CLIP's text
  tower is counted apart (`train_flops_per_token`)."""
  d, blocks = cfg.embed_dim, block_matmul_params(cfg)
  if cfg.family not in ("vit", "clip", "dit"):
    return blocks + d * cfg.vocab_size
  pixels = cfg.patch_size**2 * cfg.num_channels
  positions = cfg.num_patches + (cfg.pool == "cls" and cfg.family != "dit")
  if cfg.family == "vit":
    return blocks + pixels * d + d * cfg.num_classes / positions
  if cfg.family == "clip":
    return blocks + pixels * d + d * cfg.projection_dim / positions
  # DiT: patches in and pixels out per position; per image the timestep MLP, each block's and
  # the final adaLN modulation.
  per_image = 256 * d + d * d + 6 * d * d * cfg.num_layers + 2 * d * d
  return blocks + 2 * pixels * d + per_image / positions


def train_flops_per_token(cfg: ModelConfig, seq_len: int, trained_share: float = 1.0) -> float:
  """6 x matmul parameters + 6 x layers x context x width (Kaplan et al. 2020, eq. 2.2).

  Forward is 2 FLOPs per weight per token (the logits included) plus Kaplan's attention term
  2 x seq_len x d, q.k and p.v over the causal half of the square; the backward pass doubles
  it. `exact_train_flops_per_token` counts the full square that the einsum computes (PaLM's
  12 x layers x context x width) and each matmul exactly.

  Fine-tuning with a frozen base (`trained_share` of the parameters trained, e.g. 0.0024 for
  LoRA on GPT-2 small): the backward pass still carries the activations' gradients (2 per
  weight) but computes weight gradients for the trained share alone, (4 + 2 x share) per weight.

  CLIP: `seq_len` counts an image's positions and then its caption's; each tower is counted
  over its own positions and the two averaged.
  """
  if cfg.family == "clip":
    image = cfg.num_patches + (cfg.pool == "cls")
    text, tower = seq_len - image, cfg.text_tower()
    text_weights = block_matmul_params(tower) + tower.embed_dim * cfg.projection_dim / text
    text_flops = (4.0 + 2.0 * trained_share) * text_weights
    text_flops += 6.0 * tower.num_layers * text * tower.embed_dim
    image_cfg = dataclasses.replace(cfg, family="vit", num_classes=cfg.projection_dim)
    image_flops = train_flops_per_token(image_cfg, image, trained_share)
    return (image * image_flops + text * text_flops) / seq_len
  weights = (4.0 + 2.0 * trained_share) * matmul_params(cfg)
  return weights + 6.0 * cfg.num_layers * seq_len * cfg.embed_dim


# ---------------------------------------------------------------- parameter counts


# Top-level parameter collections that are embeddings (Kaplan et al. 2020 leave them out of N):
# `embed` (the token table, also the tied output projection, and the learned position table)
# and `logits` (an untied output projection).
EMBEDDING_PARAMS = ("embed", "logits")


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Parameter counts of a model (numbers of scalars, not bytes)."""

  total: int
  embedding: int  # Token and position tables and an untied output projection.

  @property
  def non_embedding(self) -> int:
    """Kaplan et al.'s N: the blocks and the final norm (biases and norm scales included)."""
    return self.total - self.embedding


def param_counts(cfg: ModelConfig) -> ParamCounts:
  """Exact parameter counts of the model that `cfg` describes, without building it: by formula
  for the decoder LM (the scaling-law ladder), read off the traced tree for other families."""
  if cfg.family != "decoder":
    return tree_param_counts(cfg)
  d, h, kv, hd, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  bias = int(cfg.use_bias)
  norm = d * (2 if cfg.norm == "layernorm" and cfg.use_bias else 1)  # scale (+ bias)
  attention = (
    d * h * hd
    + 2 * d * kv * hd
    + h * hd * d  # q, k, v, out kernels
    + bias * (h * hd + 2 * kv * hd + d)
  )  # and their biases
  mlp = mlp_matrices(cfg) * d * f + bias * ((mlp_matrices(cfg) - 1) * f + d)
  blocks = cfg.num_layers * (attention + mlp + 2 * norm)
  final_norm = norm if cfg.norm_position == "pre" else 0
  blocks += cfg.relative_buckets * h if cfg.positions == "relative" else 0
  embedding = cfg.vocab_size * d
  embedding += cfg.max_len * d if cfg.positions == "learned" else 0
  embedding += 0 if cfg.tie_embeddings else d * cfg.vocab_size
  embedding += cfg.vocab_size if cfg.output_bias else 0
  embedding += cfg.type_vocab_size * d + (norm if cfg.embed_norm else 0)
  return ParamCounts(total=blocks + final_norm + embedding, embedding=embedding)


def tree_param_counts(cfg: ModelConfig) -> ParamCounts:
  """The same counts read off the real parameter tree of `build_model(cfg)`.

  `jax.eval_shape` traces `init` without allocating, so a 100B-parameter model costs no memory.
  """
  model = build_model(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(cfg))["params"])
  shapes = nn.meta.unbox(shapes)

  def size(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))

  embedding = sum(size(shapes[name]) for name in EMBEDDING_PARAMS if name in shapes)
  return ParamCounts(total=size(shapes), embedding=embedding)


# ---------------------------------------------------------------- training FLOPs


def kaplan_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Kaplan et al. (2020) Table 1: C = 6N + 6 n_layer n_ctx d_attn, N non-embedding.

  Training FLOPs per token, with the forward pass 2N + 2 n_layer n_ctx d_attn and the backward
  twice that; the logits and the embeddings are left out, as in the paper.
  """
  d_attn = cfg.num_heads * cfg.head_dim
  return 6.0 * param_counts(cfg).non_embedding + 6.0 * cfg.num_layers * seq_len * d_attn


def matmul_flops_per_token(
  cfg: ModelConfig, seq_len: int, causal: bool = False, trained_share: float = 1.0
) -> dict[str, float]:
  """Exact training FLOPs per token of every matmul, by part, averaged over a `seq_len` row.

  Each matmul costs 2 FLOPs per multiply-add forward and twice that backward (the gradients of
  both operands; every operand here is a trainable weight or depends on one), so 3x forward.
  `causal=False` counts the full length x length score and value matmuls, which is what the
  einsum attention computes (and what PaLM's MFU counts); `causal=True` counts only the
  unmasked half, (seq_len + 1) / 2 keys per query on average: the useful work.
  Elementwise work (softmax, norms, GELU, the optimizer) is not counted. With a frozen base
  (`trained_share` < 1) a weight's matmul costs (2 + share) x forward: no weight gradient for
  the frozen share; the score and value matmuls (activations both) stay 3x.
  """
  d, h, kv, hd, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  keys = (seq_len + 1) / 2 if causal else seq_len
  forward = {
    "qkv": 2.0 * d * (h + 2 * kv) * hd * cfg.num_layers,
    "scores": 2.0 * keys * h * hd * cfg.num_layers,  # q . k
    "values": 2.0 * keys * h * hd * cfg.num_layers,  # p . v
    "out": 2.0 * h * hd * d * cfg.num_layers,
    "mlp": 2.0 * mlp_matrices(cfg) * d * f * cfg.num_layers,
    "logits": 2.0 * d * cfg.vocab_size,
  }
  weights = 2.0 + trained_share
  return {
    name: (3.0 if name in ("scores", "values") else weights) * value
    for name, value in forward.items()
  }


def exact_train_flops_per_token(
  cfg: ModelConfig, seq_len: int, causal: bool = False, trained_share: float = 1.0
) -> float:
  """The sum of `matmul_flops_per_token`: training FLOPs per token of all matmuls."""
  return sum(matmul_flops_per_token(cfg, seq_len, causal, trained_share).values())


def measure_matmul_peak(dtype=jnp.float32, size: int = 1024, repeats: int = 8) -> float:
  """FLOP/s of the best of `repeats` square matmuls on the default device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def peak_flops_per_device(configured: float = 0.0) -> float:
  """The configured peak, else a known chip's bf16 peak, else this device's measured matmul peak."""
  if configured > 0:
    return configured
  kind = jax.devices()[0].device_kind
  for prefix, peak in KNOWN_PEAKS.items():
    if kind.startswith(prefix):
      return peak
  return measure_matmul_peak()


def mfu(
  tokens_per_second: float, flops_per_token: float, peak_per_device: float, num_devices: int
) -> float:
  """Model FLOPs utilisation: achieved training FLOP/s over the devices' peak."""
  return tokens_per_second * flops_per_token / (peak_per_device * num_devices)
