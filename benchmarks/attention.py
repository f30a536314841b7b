"""Attention at long context: forward + backward time and compiled memory of each
implementation and mask, and a whole train step of the tiny decoder at each length.

  PYTHONPATH=. python benchmarks/attention.py                        # T = 1k .. 8k
  PYTHONPATH=. python benchmarks/attention.py --lengths=1024,2048 --repeats=3

Attention rows: one layer's attention (batch 1, 4 heads of 32), value and gradients of q, k and
v; "temp GiB" is XLA's temporary memory of the compiled program (what the [q, kv] matrices
cost), "s" the mean wall time after a warm-up call. Train rows: configs/lm.py:tiny at that
length, batch 1, its compiled per-device total (state, batch and temporaries).
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For configs/.

FLAGS = flags.FLAGS
flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192"], "Sequence lengths T.")
flags.DEFINE_integer("repeats", 2, "Timed calls per row (after one warm-up).")
flags.DEFINE_integer("dense_limit", 8192, "Longest T that the dense rows run at.")

HEADS, HEAD_DIM = 4, 32


def attention_row(impl: str, spec_name: str, length: int) -> tuple[float, float]:
  """(temp GiB, seconds) of value and gradient of one attention call."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jtrans import attention, masks

  specs = {
    "full": masks.MaskSpec(),
    "causal": masks.MaskSpec(causal=True),
    "window 512": masks.MaskSpec(causal=True, window=(512, 0)),
  }
  spec = specs[spec_name]

  def loss(q, k, v):
    return jnp.sum(attention.attention(q, k, v, spec, implementation=impl) ** 2)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, HEADS, HEAD_DIM)), jnp.float32)
  compiled = grad.lower(x, x, x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
  jax.block_until_ready(compiled(x, x, x))
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(compiled(x, x, x))
  return temp, (time.perf_counter() - start) / FLAGS.repeats


def train_row(impl: str, length: int) -> float:
  """Compiled per-device GiB of the tiny decoder's train step at this length."""
  from configs import lm
  from jtrans import aot

  config = lm.get_config("tiny")
  config.model.attention_impl = impl
  config.data.seq_len = config.model.max_len = length
  config.train.batch_size, config.mesh.data = 1, 1
  return aot.compile_report(config)["total_bytes"] / 2**30


def main(argv):
  del argv
  print("| T | implementation | mask | fwd+bwd s | temp GiB | tiny train step GiB |")
  print("|---:|---|---|---:|---:|---:|")
  for length in map(int, FLAGS.lengths):
    rows = [("blockwise", "causal"), ("blockwise", "window 512")]
    if length <= FLAGS.dense_limit:
      rows = [("xla", "full"), ("xla", "causal")] + rows
    for impl, mask in rows:
      temp, seconds = attention_row(impl, mask, length)
      step = f"{train_row(impl, length):.3f}" if mask == "causal" else ""
      print(f"| {length} | {impl} | {mask} | {seconds:.3f} | {temp:.3f} | {step} |", flush=True)


if __name__ == "__main__":
  app.run(main)
