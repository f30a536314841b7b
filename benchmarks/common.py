"""What the benchmark scripts share: a compiled-step setup and synthetic batches."""

import os
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For configs/.
from jtrans import parts, sharding, steps  # noqa: E402
from jtrans.models import ModelConfig  # noqa: E402

# The benchmark shapes of the speed issue (issue 14): (layers, width, heads, context, batch).
# 6x512: a model big enough for the matmuls to dominate; 4x128: nanoGPT's CPU recipe.
SHAPES = {"6x512": (6, 512, 8, 256, 8), "4x128": (4, 128, 4, 64, 12)}


def apply_shape(config, shape: str) -> None:
  """Sets `config`'s model and batch to one of SHAPES (MLP 4x wide, no dropout)."""
  layers, width, heads, context, batch = SHAPES[shape]
  m = config.model
  m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = layers, width, heads, 4 * width
  m.max_len = config.data.seq_len = context
  m.dropout_rate = 0.0
  config.train.batch_size = batch


class Setup(NamedTuple):
  model_cfg: ModelConfig
  model: Any
  tx: Any
  mesh: Any
  shardings: Any
  abstract: Any  # The state's shapes and shardings (nothing allocated).
  train_step: Any  # jit-compiled on first call (or .lower(abstract, batch).compile()).
  batch: dict  # A synthetic global batch of random tokens.
  init: Any  # rng -> the initial TrainState (jit it with out_shardings=shardings).


def setup(config) -> Setup:
  """The run's layout (parts.build_layout: model, optimizer with any fine-tuning, shardings)."""
  layout = parts.build_layout(config)
  mesh, model, tx = layout.mesh, layout.model, layout.tx
  model_cfg, shardings, abstract = layout.model_cfg, layout.shardings, layout.abstract
  train_step = steps.jit_engine(model, tx, config, mesh, shardings).train_step
  shape = (config.train.batch_size, config.data.seq_len)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    {
      "inputs": rng.integers(3, 259, shape, dtype=np.int32),
      "targets": rng.integers(3, 259, shape, dtype=np.int32),
      "weights": np.ones(shape, np.float32),
    },
    mesh,
  )
  return Setup(model_cfg, model, tx, mesh, shardings, abstract, train_step, batch, layout.init)


def seconds_per_step(step_fn, state, batch, steps: int) -> tuple[float, Any]:
  """Mean wall seconds of `steps` calls after one warm-up call; returns (seconds, last state)."""
  state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, state
