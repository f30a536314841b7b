"""Compile seconds against depth with and without `nn.scan`, and tokens/s in bfloat16 vs float32.

  python benchmarks/compile_and_precision.py
  python benchmarks/compile_and_precision.py --depths=4,32 --width=128 --steps=10

Scanning the blocks compiles one block whatever the depth, so the 32-layer scanned step
should cost at most 1.5x the 4-layer one; unrolled, compile time grows with depth.
"""
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For configs/.
from configs import lm  # noqa: E402
from jtrans import optim, sharding, steps, train  # noqa: E402
from jtrans.models import build_model  # noqa: E402

flags.DEFINE_list("depths", ["4", "32"], "Layer counts to compile.")
flags.DEFINE_integer("width", 128, "Model width for the compile measurements.")
flags.DEFINE_integer("steps", 10, "Timed steps for the precision comparison.")
flags.DEFINE_string("precision_size", "small", "configs/lm.py size for bfloat16 vs float32.")
FLAGS = flags.FLAGS


def setup(config):
  mesh = sharding.make_mesh(config.mesh)
  model = build_model(config.model)
  tx = optim.make_optimizer(config.optim, config.train.steps)
  _, shardings, abstract = train.state_layout(model, tx, config, mesh)
  train_fn = steps.jit_engine(model, tx, config, mesh, shardings).train_step
  shape = (config.train.batch_size, config.data.seq_len)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({"inputs": rng.integers(3, 259, shape, dtype=np.int32),
                                 "targets": rng.integers(3, 259, shape, dtype=np.int32),
                                 "weights": np.ones(shape, np.float32)}, mesh)
  return model, tx, mesh, abstract, train_fn, batch


def compile_seconds(layers: int, scan: bool) -> float:
  c = lm.get_config("tiny")
  c.model.num_layers, c.model.embed_dim, c.model.num_heads = layers, FLAGS.width, FLAGS.width // 32
  c.model.mlp_dim, c.model.scan_layers = 4 * FLAGS.width, scan
  _, _, mesh, abstract, train_fn, batch = setup(c)
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    train_fn.lower(abstract, batch).compile()
  return time.perf_counter() - start


def tokens_per_second(dtype: str) -> float:
  c = lm.get_config(FLAGS.precision_size)
  c.model.dtype = dtype
  c.train.batch_size = max(1, 4096 // c.data.seq_len)
  model, tx, mesh, _, train_fn, batch = setup(c)
  state, _, _ = train.init_state(model, tx, c, mesh)
  with jax.set_mesh(mesh):
    state, metrics = train_fn(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = train_fn(state, batch)
    jax.block_until_ready(metrics)
  return FLAGS.steps * c.train.batch_size * c.data.seq_len / (time.perf_counter() - start)


def main(argv):
  del argv
  depths = [int(d) for d in FLAGS.depths]
  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}\n")
  print(f"| layers (width {FLAGS.width}) | compile s, unrolled | compile s, scan |")
  print("|---|---|---|")
  scanned = {}
  for layers in depths:
    unrolled, scanned[layers] = compile_seconds(layers, False), compile_seconds(layers, True)
    print(f"| {layers} | {unrolled:.1f} | {scanned[layers]:.1f} |", flush=True)
  ratio = scanned[depths[-1]] / scanned[depths[0]]
  print(f"\nscanned {depths[-1]} layers / {depths[0]} layers: {ratio:.2f}x compile time\n")
  print(f"| {FLAGS.precision_size}: compute dtype | tokens/s |")
  print("|---|---|")
  for dtype in ("float32", "bfloat16"):
    print(f"| {dtype} | {tokens_per_second(dtype):,.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
