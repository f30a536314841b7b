"""Data pipeline tokens/s beside what the default training consumes.

  python benchmarks/data_throughput.py
  python benchmarks/data_throughput.py --config.data.segment_ids=True --batches=500

Iterates the training pipeline of --config (default configs/lm.py:tiny) alone, with no model,
and prints its tokens/s next to the default training's ~9k tokens/s on 2 CPU cores
(benchmarks/train_throughput.py), so the pipeline's headroom is one ratio.
"""

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For configs/.
from jtrans import parts  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/lm.py", "Config whose training data to read.")
flags.DEFINE_integer("batches", 300, "Batches to time (after one warm-up batch).")
flags.DEFINE_float("training_tokens_per_second", 9000.0, "What training consumes, to compare.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = FLAGS.config
  iterator = iter(parts.make_dataset(config, train=True))
  next(iterator)
  start = time.perf_counter()
  tokens = 0
  for _ in range(FLAGS.batches):
    tokens += next(iterator)["inputs"].size
  rate = tokens / (time.perf_counter() - start)
  print("| pipeline | tokens/s | training consumes | headroom |")
  print("|---|---|---|---|")
  print(
    f"| {config.data.name}, {config.data.tokenizer}, seq {config.data.seq_len}, "
    f"window {config.data.shuffle_window} | {rate:,.0f} | "
    f"{FLAGS.training_tokens_per_second:,.0f} | {rate / FLAGS.training_tokens_per_second:.0f}x |"
  )


if __name__ == "__main__":
  app.run(main)
