"""jtrans entry point: train, evaluate or sample a model described by a config file.

  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny
  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny --config.train.steps=200
  python run.py --mode=eval --config=configs/lm.py:tiny --workdir=runs/lm_tiny
  python run.py --mode=plan --flops=1e18                      # ladder rungs for a FLOP budget
  python run.py --sweep=configs/sweeps/cpu_ladder.py --workdir=runs/cpu_ladder   # all points
  python run.py --mode=analyze --workdir=runs/cpu_ladder       # scaling-law fits and plots

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
                    "and config.json. Relaunching on the same workdir resumes. Required except "
                    "for --mode=plan and --sweep ... --dry_run.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "compile", "plan", "analyze"],
                  "train: train (resuming if the workdir has a checkpoint), then print samples. "
                  "eval: evaluate the workdir's latest checkpoint on config.data.eval_split. "
                  "compile: compile the train step for config.mesh without training and print "
                  "per-device memory and FLOPs (simulate N CPU devices with XLA_FLAGS="
                  "--xla_force_host_platform_device_count=N). "
                  "plan: parameter and FLOP counts of --config, or with --flops the ladder rungs "
                  "and runs that spend that budget. analyze: scaling-law fits and plots of the "
                  "sweep in --workdir.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host): on Cloud "
                  "TPU and under SLURM it finds its peers; elsewhere also pass the three flags below.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
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
  if FLAGS.coordinator_address or FLAGS.distributed:
    import jax
    # On Cloud TPU and under SLURM, jax finds the coordinator itself; elsewhere name it.
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.mode == "compile":
    from jtrans import aot
    print(aot.format_report(aot.compile_report(FLAGS.config)), flush=True)
    return
  if scaling_mode():
    return
  if FLAGS.workdir is None:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir.")
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


# ================================================================ scaling laws: plan, sweeps, analyze
# (jtrans/planner.py, jtrans/sweep.py, jtrans/scaling.py; see the README's "Scaling laws".)

flags.DEFINE_float("flops", None, "--mode=plan: a compute budget C in FLOPs; prints the ladder "
                   "(configs/ladder.py) rungs and runs that spend it.")
flags.DEFINE_float("tokens_per_param", 20.0, "--mode=plan --flops: training tokens per "
                   "non-embedding parameter to aim for (Chinchilla: 20).")
flags.DEFINE_string("sweep", None, "A sweep file, configs/sweeps/<name>.py: trains each of its "
                    "points in its own subdirectory of --workdir, one after another; relaunching "
                    "skips finished points, resumes interrupted ones and retries failed ones. "
                    "--config.<key>=<value> overrides apply to every point.")
flags.DEFINE_integer("sweep_index", None, "With --sweep: run only point i (one job of a job array).")
flags.DEFINE_bool("dry_run", False, "With --sweep: list the points with N, D, C and the estimated "
                  "time on this machine, and train nothing.")
flags.DEFINE_integer("bootstrap", 200, "--mode=analyze: bootstrap resamples for the 95% intervals.")


def scaling_mode() -> bool:
  """Runs --mode=plan, --mode=analyze or a --sweep; returns whether one of them ran."""
  if FLAGS.mode == "plan":
    from jtrans import planner
    if FLAGS.flops is not None:
      from configs import ladder
      print(planner.format_budget(FLAGS.flops, ladder.rungs(), FLAGS.tokens_per_param), flush=True)
    else:
      print(planner.format_config(FLAGS.config), flush=True)
    return True
  if FLAGS.mode == "analyze":
    if FLAGS.workdir is None:
      raise app.UsageError("--mode=analyze needs --workdir (a sweep's directory).")
    from jtrans import scaling_report
    print(scaling_report.analyze(FLAGS.workdir, bootstrap_samples=FLAGS.bootstrap), flush=True)
    return True
  if FLAGS.sweep is None:
    return False
  from jtrans import sweep
  if FLAGS["config"].present:
    logging.warning("--config=%s is ignored: a sweep's base config is its file's get_config(); "
                    "--config.<key> overrides still apply.",
                    config_flags.get_config_filename(FLAGS["config"]))
  loaded = sweep.load(FLAGS.sweep)
  extra = dict(config_flags.get_override_values(FLAGS["config"]))
  if FLAGS.dry_run:
    print(sweep.dry_run_table(loaded, extra, FLAGS.workdir), flush=True)
    return True
  if FLAGS.workdir is None:
    raise app.UsageError("--sweep needs --workdir (add --dry_run to only list the points).")
  counts = sweep.run(loaded, FLAGS.workdir, FLAGS.sweep_index, extra)
  if counts.get("failed") or counts.get("interrupted"):
    raise SystemExit(1)  # A job array sees the failure; sweep_status.json says which and why.
  return True


if __name__ == "__main__":
  app.run(main)
