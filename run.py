"""jtrans entry point: flags and dispatch; each mode's work is a function in jtrans/modes.py.

  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny --config.train.steps=200
  python run.py --mode=generate --config=configs/lm.py:tiny --workdir=runs/lm_tiny --prompt="def "
  python run.py --sweep=configs/sweeps/cpu_ladder.py --workdir=runs/cpu_ladder

Every mode is in the README. The same command on the same workdir resumes from its checkpoint.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

# fmt: off
# (A table of flags reads best one definition to a line.)
config_flags.DEFINE_config_file(
    # The default is found beside run.py, so that commands work from any working directory.
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "lm.py"),
    "Config file, optionally with an argument: configs/<file>.py[:arg]. Override any key with "
    "--config.<key>=<value> (e.g. --config.train.steps=200); unknown keys fail.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard events "
                    "and config.json; relaunching on it resumes. Required except for --mode=plan, "
                    "--mode=compile and --sweep ... --dry_run.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "compile", "plan", "analyze", "generate",
                                     "export", "coord_check"],
                  "train: train (resuming), then print samples. eval: the latest checkpoint's "
                  "metrics on config.data.eval_split. compile: compile the train step for "
                  "config.mesh (or --topology) and print memory and FLOPs. plan: parameter and "
                  "FLOP counts of --config, or with --flops the ladder runs for that budget. "
                  "analyze: scaling-law (or lr transfer) fits and plots of the sweep in --workdir. "
                  "generate: continue --prompt/--prompt_file (from --workdir or --hf_dir). export: "
                  "the latest parameters as a Hugging Face directory (--hf_dir). coord_check: "
                  "activation scales against --widths (muP's coordinate check).")
flags.DEFINE_list("widths", ["64", "128", "256", "512", "1024"], "--mode=coord_check: widths.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host): on Cloud "
                  "TPU and under SLURM it finds its peers; elsewhere also pass the three flags below.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_string("topology", None, "--mode=compile: compile for this Cloud TPU slice, e.g. "
                    "v5p:4x4x4, v4:2x2x2, v5e:4x4, v6e:8x8 (libtpu wheel; no TPU needed).")
flags.DEFINE_float("flops", None, "--mode=plan: a compute budget C in FLOPs.")
flags.DEFINE_float("tokens_per_param", 20.0, "--mode=plan --flops: tokens per parameter.")
flags.DEFINE_string("sweep", None, "A sweep file (configs/sweeps/<name>.py): trains each point in "
                    "its own subdirectory of --workdir; relaunching skips finished points, resumes "
                    "interrupted ones and retries failed ones; --config.<key> overrides apply to all.")
flags.DEFINE_integer("sweep_index", None, "With --sweep: run only point i (one job of a job array).")
flags.DEFINE_bool("dry_run", False, "With --sweep: list the points and their cost; train nothing.")
flags.DEFINE_integer("bootstrap", 200, "--mode=analyze: bootstrap resamples for the 95% intervals.")
flags.DEFINE_multi_string("prompt", [], "--mode=generate: a prompt (decoder) or source text "
                          "(encoder-decoder); repeat the flag or separate prompts with '|'.")
flags.DEFINE_string("prompt_file", None, "--mode=generate: a file of prompts, one per line.")
flags.DEFINE_string("hf_dir", None, "--mode=export: the directory to write. --mode=generate: a "
                    "Hugging Face directory (or a PEFT LoRA adapter, on its base) instead of "
                    "--workdir, with its tokenizer unless --config.data.tokenizer is set.")
flags.DEFINE_integer("max_new_tokens", None, "--mode=generate: at most this many new tokens "
                     "(default config.sample.length).")
flags.DEFINE_string("compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/"
                    "jtrans/xla"), "JAX's compilation cache (local or gs://): a relaunch loads its "
                    "programs instead of compiling them. '' turns it off.")
flags.DEFINE_integer("num_beams", None, "--mode=generate: beams (default config.sample.num_beams).")
# fmt: on
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # Library INFO logs (Orbax reports each file it writes) drown the progress lines; -v=0 shows them.
    logging.set_verbosity(logging.WARNING)
  from jtrans import modes  # Here, after flag parsing: --help answers without loading JAX.

  cluster = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed)
  modes.start_jax(FLAGS.compilation_cache_dir, *cluster)
  free = {"plan", "compile", "generate" if FLAGS.hf_dir else "plan"}  # Modes without a workdir.
  if FLAGS.workdir is None and not (FLAGS.sweep and FLAGS.dry_run) and FLAGS.mode not in free:
    raise app.UsageError(f"{'--sweep' if FLAGS.sweep else '--mode=' + FLAGS.mode} needs --workdir.")
  if FLAGS.sweep and FLAGS["config"].present:
    logging.warning("--config is ignored: a sweep's base config is its file's get_config().")
  for text in filter(None, dispatch(modes)):
    print(text, flush=True)


def dispatch(modes) -> list[str]:
  """Runs the mode (or sweep) the flags ask for with `jtrans.modes`; returns what to print."""
  config, workdir, mode = FLAGS.config, FLAGS.workdir, FLAGS.mode
  overrides = dict(config_flags.get_override_values(FLAGS["config"]))
  if FLAGS.sweep:
    text, failed = modes.sweep(FLAGS.sweep, workdir, FLAGS.sweep_index, overrides, FLAGS.dry_run)
    if failed:  # A job array sees the failure; sweep_status.json says which and why.
      raise SystemExit(1)
    return [text]
  if mode == "generate":
    prompts = modes.read_prompts(FLAGS.prompt, FLAGS.prompt_file)
    if not prompts:
      raise app.UsageError("--mode=generate needs --prompt=TEXT (or 'a|b') or --prompt_file.")
    if FLAGS.hf_dir and "data.tokenizer" not in overrides:
      config.data.tokenizer, config.data.tokenizer_path = "hf", modes.tokenizer_dir(FLAGS.hf_dir)
    texts = modes.generate(
      config, prompts, workdir, FLAGS.hf_dir, FLAGS.max_new_tokens, FLAGS.num_beams
    )
    return [f"--- {i}: {prompt}\n{text}\n" for i, (prompt, text) in enumerate(zip(prompts, texts))]
  if mode == "train":
    return [f"--- sample {i}:\n{text}\n" for i, text in enumerate(modes.train(config, workdir))]
  actions = {
    "eval": lambda: modes.evaluate(config, workdir),
    "compile": lambda: modes.compile_step(config, FLAGS.topology),
    "plan": lambda: modes.plan(config, FLAGS.flops, FLAGS.tokens_per_param),
    "analyze": lambda: modes.analyze(workdir, FLAGS.bootstrap),
    "export": lambda: modes.export(config, workdir, FLAGS.hf_dir),
    "coord_check": lambda: modes.coord_check(config, [int(w) for w in FLAGS.widths], workdir),
  }
  return [actions[mode]()]


if __name__ == "__main__":
  app.run(main)
