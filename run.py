"""jtrans entry point: flags and dispatch; each mode's work is in jtrans/modes.py.

  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny
  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny --config.train.steps=200
  python run.py --mode=eval --config=configs/lm.py:tiny --workdir=runs/lm_tiny
  python run.py --mode=plan --flops=1e18                      # ladder rungs for a FLOP budget
  python run.py --sweep=configs/sweeps/cpu_ladder.py --workdir=runs/cpu_ladder   # all points
  python run.py --mode=analyze --workdir=runs/cpu_ladder       # scaling-law fits and plots
  python run.py --mode=generate --config=configs/lm.py:tiny --workdir=runs/lm_tiny --prompt="def "
  python run.py --mode=generate --hf_dir=path/to/marian --prompt="Hello" --num_beams=4
  python run.py --mode=export --config=configs/llama.py:tiny --workdir=runs/llama_tiny --hf_dir=out/

Launching the same command again on the same workdir resumes from its latest checkpoint.
"""
import os

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    # The default is found beside run.py, so that commands work from any working directory.
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "lm.py"),
    "Config file, optionally with an argument: configs/<file>.py[:arg]. Override any key with "
    "--config.<key>=<value> (e.g. --config.train.steps=200); unknown keys fail.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard events "
                    "and config.json; relaunching on it resumes. Required except for --mode=plan, "
                    "--mode=compile and --sweep ... --dry_run.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "compile", "plan", "analyze", "generate",
                                     "export"],
                  "train: train (resuming), then print samples. eval: the latest checkpoint's "
                  "metrics on config.data.eval_split. compile: compile the train step for "
                  "config.mesh (or --topology) and print memory and FLOPs. plan: parameter and "
                  "FLOP counts of --config, or with --flops the ladder runs for that budget. "
                  "analyze: scaling-law fits and plots of the sweep in --workdir. generate: "
                  "continue --prompt/--prompt_file (from --workdir or --hf_dir). export: write "
                  "the latest parameters as a Hugging Face directory (--hf_dir).")
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
                    "Hugging Face model directory to use instead of --workdir (its own tokenizer "
                    "unless --config.data.tokenizer is given; --config supplies config.sample).")
flags.DEFINE_integer("max_new_tokens", None, "--mode=generate: at most this many new tokens "
                     "(default config.sample.length).")
flags.DEFINE_integer("num_beams", None, "--mode=generate: beams (default config.sample.num_beams).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # Library INFO logs (Orbax reports every file it writes) drown the progress lines; -v=0 shows them.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.coordinator_address or FLAGS.distributed:
    import jax
    # On Cloud TPU and under SLURM, jax finds the coordinator itself; elsewhere name it.
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from jtrans import modes  # Here, so that --help answers at once, without loading JAX.
  config, workdir, overrides = FLAGS.config, FLAGS.workdir, config_flags.get_override_values(
      FLAGS["config"])
  needs_workdir = FLAGS.sweep is None and FLAGS.mode not in ("plan", "compile", "generate")
  if (needs_workdir or (FLAGS.sweep and not FLAGS.dry_run)) and workdir is None:
    raise app.UsageError(f"{'--sweep' if FLAGS.sweep else '--mode=' + FLAGS.mode} needs --workdir.")
  if FLAGS.sweep is not None:
    if FLAGS["config"].present:
      logging.warning("--config is ignored: a sweep's base config is its file's get_config(); "
                      "--config.<key> overrides still apply.")
    text, failed = modes.sweep(FLAGS.sweep, workdir, FLAGS.sweep_index, dict(overrides),
                               FLAGS.dry_run)
    if text:
      print(text, flush=True)
    if failed:
      raise SystemExit(1)  # A job array sees the failure; sweep_status.json says which and why.
  elif FLAGS.mode == "generate":
    prompts = modes.read_prompts(FLAGS.prompt, FLAGS.prompt_file)
    if not prompts or not (workdir or FLAGS.hf_dir):
      raise app.UsageError("--mode=generate needs --prompt=TEXT (repeatable, or 'a|b') or "
                           "--prompt_file=PATH, and --workdir (its latest checkpoint) or --hf_dir.")
    if FLAGS.hf_dir and "data.tokenizer" not in overrides:
      config.data.tokenizer, config.data.tokenizer_path = "hf", FLAGS.hf_dir  # Its own.
    texts = modes.generate(config, prompts, workdir=workdir, hf_dir=FLAGS.hf_dir,
                           max_new_tokens=FLAGS.max_new_tokens, num_beams=FLAGS.num_beams)
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
      print(f"--- {i}: {prompt}\n{text}\n", flush=True)
  elif FLAGS.mode == "train":
    for i, text in enumerate(modes.train(config, workdir)):
      print(f"--- sample {i}:\n{text}\n", flush=True)
  elif FLAGS.mode == "export" and not FLAGS.hf_dir:
    raise app.UsageError("--mode=export needs --hf_dir (where to write config.json and "
                         "model.safetensors).")
  else:
    print({"eval": lambda: modes.evaluate(config, workdir),
           "compile": lambda: modes.compile_step(config, FLAGS.topology),
           "plan": lambda: modes.plan(config, FLAGS.flops, FLAGS.tokens_per_param),
           "analyze": lambda: modes.analyze(workdir, FLAGS.bootstrap),
           "export": lambda: modes.export(config, workdir, FLAGS.hf_dir)}[FLAGS.mode](), flush=True)


if __name__ == "__main__":
  app.run(main)
