"""Training throughput on this machine: tokens/s, MFU, compile seconds and peak memory.

  python benchmarks/train_throughput.py                      # lm.py tiny and small, float32
  python benchmarks/train_throughput.py --sizes=tiny --steps=50

MFU is training FLOPs per token (jtrans.flops: 6N + attention) x tokens/s over the peak:
on CPU the peak is this machine's float32 matmul FLOP/s, measured first; on a known
accelerator, its bf16 peak. Batches are synthetic, so the figure is the model's alone
(benchmarks/ has no data-loading in it).
"""

import resource
import time

import common  # noqa: E402  (benchmarks/common.py; puts the project root on sys.path)
import jax
from absl import app, flags

from configs import lm  # noqa: E402
from jtrans import flops, parts  # noqa: E402

flags.DEFINE_list("sizes", ["tiny", "small"], "configs/lm.py sizes to measure.")
flags.DEFINE_integer("steps", 20, "Timed steps per size (after one warm-up step).")
flags.DEFINE_string("dtype", "float32", "Compute dtype (bfloat16 is slow on CPUs).")
flags.DEFINE_integer(
  "max_tokens_per_step",
  4096,
  "Halve a size's batch until it fits this "
  "(0: the config's batch), so big sizes stay quick to measure on a CPU.",
)
FLAGS = flags.FLAGS


def measure(size: str, peak: float) -> dict:
  config = lm.get_config(size)
  config.model.dtype = FLAGS.dtype
  while (
    FLAGS.max_tokens_per_step
    and config.train.batch_size > 1
    and config.train.batch_size * config.data.seq_len > FLAGS.max_tokens_per_step
  ):
    config.train.batch_size //= 2
  s = common.setup(config)
  model_cfg, mesh, train_fn, batch = s.model_cfg, s.mesh, s.train_step, s.batch
  state, _, _ = parts.init_state(s.model, s.tx, config, mesh)
  shape = (config.train.batch_size, config.data.seq_len)
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled = train_fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    seconds, state = common.seconds_per_step(compiled, state, batch, FLAGS.steps)
  tokens_per_second = shape[0] * shape[1] / seconds
  flops_per_token = flops.train_flops_per_token(model_cfg, config.data.seq_len)
  xla_bytes = (
    (
      memory.temp_size_in_bytes
      + memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
    )
    if memory
    else 0
  )
  return {
    "size": size,
    "params": sum(x.size for x in jax.tree.leaves(state.params)),
    "tokens/step": shape[0] * shape[1],
    "tokens/s": tokens_per_second,
    "MFU": flops.mfu(tokens_per_second, flops_per_token, peak, mesh.size),
    "compile s": compile_seconds,
    "step memory MiB": xla_bytes / 2**20,
    "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def main(argv):
  del argv
  device = jax.devices()[0]
  peak = flops.peak_flops_per_device()
  print(
    f"device: {device.device_kind} x {jax.device_count()}; peak used for MFU: "
    f"{peak / 1e9:.1f} GFLOP/s per device ({FLAGS.dtype} compute)\n"
  )
  rows = [measure(size, peak) for size in FLAGS.sizes]
  header = list(rows[0])
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for row in rows:
    cells = [
      f"{row['size']}",
      f"{row['params'] / 1e6:.2f}M",
      f"{row['tokens/step']}",
      f"{row['tokens/s']:,.0f}",
      f"{100 * row['MFU']:.1f}%",
      f"{row['compile s']:.1f}",
      f"{row['step memory MiB']:.0f}",
      f"{row['peak RSS MiB']:.0f}",
    ]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
