"""Compile seconds against depth with and without `nn.scan`, and tokens/s in bfloat16 vs float32.

  python benchmarks/compile_and_precision.py
  python benchmarks/compile_and_precision.py --depths=4,32 --width=128 --steps=10

Scanning the blocks compiles one block whatever the depth, so the 32-layer scanned step
should cost at most 1.5x the 4-layer one; unrolled, compile time grows with depth.
"""

import time

import common  # noqa: E402  (benchmarks/common.py; puts the project root on sys.path)
import jax
from absl import app, flags

from configs import lm  # noqa: E402
from jtrans import parts  # noqa: E402

flags.DEFINE_list("depths", ["4", "32"], "Layer counts to compile.")
flags.DEFINE_integer("width", 128, "Model width for the compile measurements.")
flags.DEFINE_integer("steps", 10, "Timed steps for the precision comparison.")
flags.DEFINE_string("precision_size", "small", "configs/lm.py size for bfloat16 vs float32.")
FLAGS = flags.FLAGS


def compile_seconds(layers: int, scan: bool) -> float:
  c = lm.get_config("tiny")
  c.model.num_layers, c.model.embed_dim, c.model.num_heads = layers, FLAGS.width, FLAGS.width // 32
  c.model.mlp_dim, c.model.scan_layers = 4 * FLAGS.width, scan
  s = common.setup(c)
  start = time.perf_counter()
  with jax.set_mesh(s.mesh):
    s.train_step.lower(s.abstract, s.batch).compile()
  return time.perf_counter() - start


def tokens_per_second(dtype: str) -> float:
  c = lm.get_config(FLAGS.precision_size)
  c.model.dtype = dtype
  c.train.batch_size = max(1, 4096 // c.data.seq_len)
  s = common.setup(c)
  state, _, _ = parts.init_state(s.model, s.tx, c, s.mesh)
  with jax.set_mesh(s.mesh):
    seconds, _ = common.seconds_per_step(s.train_step, state, s.batch, FLAGS.steps)
  return c.train.batch_size * c.data.seq_len / seconds


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
