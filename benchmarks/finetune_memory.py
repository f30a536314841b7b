"""Full fine-tuning against LoRA and prefix tuning: trained parameters, optimizer-state bytes,
step time.

  python benchmarks/finetune_memory.py                     # GPT-2 small's shapes, 4 x 256 tokens
  python benchmarks/finetune_memory.py --config=configs/lm.py:tiny --steps=2

Each row compiles the train step of --config with one `config.finetune` setting and times it
on a synthetic batch: full fine-tuning; LoRA r=8 on the attention's query and value (the LoRA
paper's GPT-2 setting), with the frozen base in float32 and in bfloat16; prefix tuning with 16
keys and values per layer through Li & Liang's 512-wide MLP; prompt tuning with 16 input
vectors. Optimizer bytes are
Adam's moments as the optimizer holds them (fine-tuning keeps none for frozen leaves); "temp"
is XLA's temporary buffers of the compiled step (activations, gradients).
"""

import time

import common  # noqa: E402  (benchmarks/common.py; puts the project root on sys.path)
import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jtrans import finetune  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/gpt2.py:small", "The model to fine-tune.")
flags.DEFINE_integer("steps", 3, "Timed steps per row (after one warm-up step).")
flags.DEFINE_integer("batch", 4, "Rows per step.")
flags.DEFINE_integer("seq_len", 256, "Tokens per row.")
FLAGS = flags.FLAGS

METHODS = {
  "full": {},
  "LoRA r=8 q,v": {"method": "lora", "lora_targets": "attention/(query|value)$"},
  "LoRA r=8 q,v, bf16 base": {
    "method": "lora",
    "lora_targets": "attention/(query|value)$",
    "frozen_dtype": "bfloat16",
  },
  "prefix P=16, MLP 512": {"method": "prefix", "prefix_length": 16, "prefix_hidden": 512},
  "prompt P=16": {"method": "prompt", "prefix_length": 16},
}


def nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def main(argv):
  del argv
  print(
    "| method | trained params | share | params bytes | optimizer bytes | temp bytes | s/step | tokens/s | compile s |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for name, settings in METHODS.items():
    c = FLAGS.config.copy_and_resolve_references()
    c.finetune.update(settings)
    c.train.batch_size, c.data.seq_len = FLAGS.batch, FLAGS.seq_len
    # A prefix takes the first positions of the learned table.
    c.model.max_len = max(c.model.max_len, FLAGS.seq_len + c.finetune.prefix_length)
    c.model.dropout_rate = 0.0
    s = common.setup(c)
    start = time.perf_counter()
    compiled = s.train_step.lower(s.abstract, s.batch).compile()
    compile_s = time.perf_counter() - start
    temp = compiled.memory_analysis().temp_size_in_bytes
    state = jax.jit(s.init, out_shardings=s.shardings)(jax.random.key(0))
    seconds, _ = common.seconds_per_step(compiled, state, s.batch, FLAGS.steps)
    trained, total = finetune.count(s.abstract.params, finetune.Settings.from_config(c))
    tokens = FLAGS.batch * FLAGS.seq_len
    print(
      f"| {name} | {trained:,} | {100 * trained / total:.2f}% | {nbytes(s.abstract.params) / 2**20:,.0f} MiB "
      f"| {nbytes(s.abstract.opt_state) / 2**20:,.1f} MiB | {temp / 2**20:,.0f} MiB | {seconds:.2f} "
      f"| {tokens / seconds:,.0f} | {compile_s:.1f} |",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
