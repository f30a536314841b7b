"""jtrans entry point: train, evaluate or sample a model described by a config file.

  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny
  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny --config.train.steps=200
  python run.py --mode=eval --config=configs/lm.py:tiny --workdir=runs/lm_tiny

Launching the same command again on the same workdir resumes from its latest checkpoint.
"""
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    "config", "configs/lm.py", "Config file, optionally with an argument: configs/<file>.py[:arg]. "
    "Override any key with --config.<key>=<value> (e.g. --config.train.steps=200); unknown keys fail.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard events "
                    "and config.json. Relaunching on the same workdir resumes.", required=True)
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train (resuming if the workdir has a checkpoint), then print samples. "
                  "eval: evaluate the workdir's latest checkpoint on config.data.eval_split.")
FLAGS = flags.FLAGS


def write_config(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # Library INFO logs (Orbax reports every file it writes) drown the progress lines; -v=0 shows them.
    logging.set_verbosity(logging.WARNING)
  # Imported here so that --help answers at once, without loading JAX.
  import jax
  from jtrans import train

  config, workdir = FLAGS.config, FLAGS.workdir
  if jax.process_index() == 0:
    write_config(config, workdir)
  if FLAGS.mode == "train":
    state = train.train(config, workdir)
    if config.sample.num_samples and jax.process_index() == 0:
      for i, text in enumerate(train.sample_text(config, state.params)):
        print(f"--- sample {i}:\n{text}\n", flush=True)
  else:
    scalars = train.evaluate_checkpoint(config, workdir)
    print(json.dumps(scalars, indent=2), flush=True)


if __name__ == "__main__":
  app.run(main)
