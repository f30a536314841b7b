"""FLOP accounting: parameters, training FLOPs per token, peak FLOP/s and MFU."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

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


def matmul_params(cfg: ModelConfig) -> int:
  """Weights that take part in a matmul per token: the blocks plus the output projection."""
  d, kv = cfg.embed_dim, cfg.kv_heads * cfg.head_dim
  per_layer = d * d * 2 + d * kv * 2 + 2 * d * cfg.mlp_dim  # q, out, k, v, mlp in and out
  return cfg.num_layers * per_layer + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """6 x matmul parameters + 6 x layers x context x width (Kaplan et al. 2020, eq. 2.2).

  Forward is 2 FLOPs per weight per token plus 2 x 2 x seq_len x d for q.k and p.v; the
  backward pass doubles it. The attention term counts the full square, as PaLM's MFU does.
  """
  return 6.0 * matmul_params(cfg) + 6.0 * cfg.num_layers * seq_len * cfg.embed_dim


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
  return 2.0 * size ** 3 / best


def peak_flops_per_device(configured: float = 0.0) -> float:
  """The configured peak, else a known chip's bf16 peak, else this device's measured matmul peak."""
  if configured > 0:
    return configured
  kind = jax.devices()[0].device_kind
  for prefix, peak in KNOWN_PEAKS.items():
    if kind.startswith(prefix):
      return peak
  return measure_matmul_peak()


def mfu(tokens_per_second: float, flops_per_token: float, peak_per_device: float,
        num_devices: int) -> float:
  """Model FLOPs utilisation: achieved training FLOP/s over the devices' peak."""
  return tokens_per_second * flops_per_token / (peak_per_device * num_devices)
