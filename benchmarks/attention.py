"""Attention at long context: forward + backward time and compiled memory of each
implementation and mask, and a whole train step of the tiny decoder at each length; with
--loss, the chunked cross-entropy's memory at GPT-2's vocabulary.

  PYTHONPATH=. python benchmarks/attention.py                  # T = 1k .. 16k
  PYTHONPATH=. python benchmarks/attention.py --lengths=32768 --dense_limit=0
  PYTHONPATH=. python benchmarks/attention.py --impl=auto      # a GPU's cuDNN, a TPU's Splash
  PYTHONPATH=. python benchmarks/attention.py --loss

Attention rows: one layer's attention (batch 1, 4 heads of 32; bfloat16 with --impl, which
cuDNN needs), value and gradients of q, k and v; "temp GiB" is XLA's temporary memory of the
compiled program (what the [q, kv] matrices cost), "s" the mean wall time after a warm-up
call. On the causal rows, the train columns are configs/lm.py:tiny at that length, batch 1:
its compiled per-device total (state, batch and temporaries) and the mean time of a step.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For configs/.

FLAGS = flags.FLAGS
flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192", "16384"], "Sequence lengths T.")
flags.DEFINE_integer("repeats", 2, "Timed calls per row (after one warm-up).")
flags.DEFINE_integer("dense_limit", 8192, "Longest T that the dense rows run at.")
flags.DEFINE_string("impl", "", "Also rows of this implementation (auto, cudnn, splash).")
flags.DEFINE_bool("loss", False, "Chunked cross-entropy rows instead (GPT-2 vocabulary).")

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
    # BigBird-ITC's base setting: blocks of 64, 3 window, 2 global and 3 random blocks.
    "bigbird": masks.MaskSpec(sparse=masks.Sparse(64, window=1, global_blocks=2, random=3)),
  }
  spec = specs[spec_name]
  dtype = jnp.bfloat16 if FLAGS.impl else jnp.float32

  def loss(q, k, v):
    out = attention.attention(q, k, v, spec, implementation=impl)
    return jnp.sum(out.astype(jnp.float32) ** 2)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, HEADS, HEAD_DIM)), dtype)
  compiled = grad.lower(x, x, x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
  jax.block_until_ready(compiled(x, x, x))
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(compiled(x, x, x))
  return temp, (time.perf_counter() - start) / FLAGS.repeats


def train_row(impl: str, length: int) -> tuple[float, float]:
  """(compiled per-device GiB, seconds per step) of the tiny decoder's train step."""
  import common  # benchmarks/common.py (this script's folder is on sys.path).
  import jax

  from configs import lm
  from jtrans import aot, parts

  config = lm.get_config("tiny")
  config.model.attention_impl = impl
  config.data.seq_len = config.model.max_len = length
  config.train.batch_size, config.mesh.data = 1, 1
  gib = aot.compile_report(config)["total_bytes"] / 2**30
  s = common.setup(config)
  state, _, _ = parts.init_state(s.model, s.tx, config, s.mesh)
  with jax.set_mesh(s.mesh):
    seconds, _ = common.seconds_per_step(s.train_step, state, s.batch, FLAGS.repeats)
  return gib, seconds


def loss_rows() -> None:
  """The tiny decoder with GPT-2's 50,257-token vocabulary, batch 1: per-device GiB of the
  compiled train step, all logits at once against chunks of positions."""
  from configs import lm
  from jtrans import aot

  print("| T | loss.chunk_length | temp GiB | total GiB |")
  print("|---:|---:|---:|---:|")
  for length in map(int, FLAGS.lengths):
    for chunk in (0, 512, 256, 128):
      config = lm.get_config("tiny")
      config.model.vocab_size = 50257
      config.model.attention_impl = "blockwise"
      config.data.seq_len = config.model.max_len = length
      config.train.batch_size, config.mesh.data = 1, 1
      config.loss.chunk_length = chunk
      r = aot.compile_report(config)
      temp, total = r["temp_bytes"] / 2**30, r["total_bytes"] / 2**30
      print(f"| {length} | {chunk or 'off'} | {temp:.3f} | {total:.3f} |", flush=True)


def main(argv):
  del argv
  if FLAGS.loss:
    loss_rows()
    return
  print("| T | implementation | mask | fwd+bwd s | temp GiB | train step GiB | train step s |")
  print("|---:|---|---|---:|---:|---:|---:|")
  for length in map(int, FLAGS.lengths):
    rows = [("blockwise", "causal"), ("blockwise", "window 512"), ("blockwise", "bigbird")]
    if length <= FLAGS.dense_limit:
      rows = [("xla", "full"), ("xla", "causal")] + rows
    if FLAGS.impl:
      rows += [(FLAGS.impl, "causal"), (FLAGS.impl, "window 512")]
    for impl, mask in rows:
      temp, seconds = attention_row(impl, mask, length)
      train = ("", "")
      if mask == "causal":
        gib, step = train_row(impl, length)
        train = (f"{gib:.3f}", f"{step:.2f}")
      print(
        f"| {length} | {impl} | {mask} | {seconds:.3f} | {temp:.3f} | {train[0]} | {train[1]} |",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
