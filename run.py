"""jtrans entry point: train, evaluate or sample a model described by a config file.

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
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    # The default is found beside run.py, so that commands work from any working directory.
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "lm.py"), "Config file, optionally with an argument: configs/<file>.py[:arg]. "
    "Override any key with --config.<key>=<value> (e.g. --config.train.steps=200); unknown keys fail.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard events "
                    "and config.json. Relaunching on the same workdir resumes. Required except "
                    "for --mode=plan and --sweep ... --dry_run.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "compile", "plan", "analyze", "generate",
                                     "export"],
                  "train: train (resuming if the workdir has a checkpoint), then print samples. "
                  "eval: evaluate the workdir's latest checkpoint on config.data.eval_split. "
                  "compile: compile the train step for config.mesh without training and print "
                  "per-device memory and FLOPs (simulate N CPU devices with XLA_FLAGS="
                  "--xla_force_host_platform_device_count=N). "
                  "plan: parameter and FLOP counts of --config, or with --flops the ladder rungs "
                  "and runs that spend that budget. analyze: scaling-law fits and plots of the "
                  "sweep in --workdir. generate: continue --prompt/--prompt_file with the "
                  "workdir's latest checkpoint (or --hf_dir's weights), as config.sample says. "
                  "export: write the workdir's latest parameters as a Hugging Face directory "
                  "(--hf_dir; GPT-2- or Llama-shaped decoders).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host): on Cloud "
                  "TPU and under SLURM it finds its peers; elsewhere also pass the three flags below.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_string("topology", None, "--mode=compile: compile for this Cloud TPU slice instead "
                    "of this host's devices, e.g. v5p:4x4x4, v4:2x2x2, v5e:4x4, v6e:8x8 (needs the "
                    "libtpu wheel that matches jax; no TPU needed).")
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
  if FLAGS.mode == "compile":
    if FLAGS.topology:
      import jax
      # The slice is described by libtpu alone; the host's own backend stays the CPU, so the
      # check also runs beside a job that holds this machine's TPU (and libtpu's lock file).
      jax.config.update("jax_platforms", "cpu")
    from jtrans import aot
    print(aot.format_report(aot.compile_report(FLAGS.config, FLAGS.topology)), flush=True)
    return
  if scaling_mode():
    return
  if FLAGS.mode == "generate":
    generate_mode()
    return
  if FLAGS.mode == "export":
    export_mode()
    return
  if FLAGS.workdir is None:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir.")
  # Imported here so that --help answers at once, without loading JAX.
  import jax
  from jtrans import train

  config, workdir = FLAGS.config, FLAGS.workdir
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


# ================================================================ generate
# (jtrans/decoding.py, jtrans/beam_search.py)

flags.DEFINE_multi_string("prompt", [], "--mode=generate: a prompt (decoder) or source text "
                          "(encoder-decoder); repeat the flag or separate prompts with '|'.")
flags.DEFINE_string("prompt_file", None, "--mode=generate: a file of prompts, one per line.")
flags.DEFINE_string("hf_dir", None, "--mode=export: the directory to write. --mode=generate: a Hugging Face model directory (config.json "
                    "+ safetensors; jtrans.hf reads GPT-2, Llama, Marian, T5) instead of "
                    "--workdir's checkpoint. The model comes from its config.json, the tokenizer "
                    "from its files (or --config.data.tokenizer); --config supplies only "
                    "config.sample.")
flags.DEFINE_integer("max_new_tokens", None, "--mode=generate: tokens to generate at most "
                     "(default config.sample.length).")
flags.DEFINE_integer("num_beams", None, "--mode=generate: beam search with this many beams "
                     "(default config.sample.num_beams; 1 samples, or is greedy at temperature 0).")


def read_prompts() -> list[str]:
  prompts = [p for flag in FLAGS.prompt for p in flag.split("|")]
  if FLAGS.prompt_file:
    from etils import epath
    prompts += [line for line in epath.Path(FLAGS.prompt_file).read_text().splitlines()
                if line.strip()]
  if not prompts:
    raise app.UsageError("--mode=generate needs --prompt=TEXT (repeatable, or 'a|b') or "
                         "--prompt_file=PATH (one prompt per line).")
  return prompts


def restore_params(config, workdir: str):
  """The parameters of the workdir's latest checkpoint, on this host's mesh."""
  from jtrans import train
  layout = train.build_layout(config, data=False)  # Reads weights, not the data set.
  return train.restore_latest(config, workdir, layout.abstract)[0].params


def generate_mode() -> None:
  """Prints each prompt and its continuation (decoder) or output (encoder-decoder)."""
  import jax
  import numpy as np
  from jtrans import beam_search, decoding, train
  from jtrans.models import ModelConfig, build_model

  config, prompts = FLAGS.config, read_prompts()
  if FLAGS.hf_dir:
    from jtrans import hf
    model_cfg, params = hf.load_pretrained(FLAGS.hf_dir)
    if "data.tokenizer" not in config_flags.get_override_values(FLAGS["config"]):
      config.data.tokenizer, config.data.tokenizer_path = "hf", FLAGS.hf_dir  # Its own.
  elif FLAGS.workdir:
    model_cfg, params = ModelConfig.from_config(config.model), restore_params(config, FLAGS.workdir)
  else:
    raise app.UsageError("--mode=generate needs --workdir (its latest checkpoint) or --hf_dir.")
  tok = train.make_tokenizer(config)
  if model_cfg.vocab_size < tok.vocab_size:
    raise ValueError(f"the {config.data.tokenizer!r} tokenizer has {tok.vocab_size} ids but the "
                     f"model {model_cfg.vocab_size}; set config.data.tokenizer (and tokenizer_path) "
                     "to the tokenizer the model was trained with.")
  s, model = config.sample, build_model(model_cfg)
  beams = FLAGS.num_beams if FLAGS.num_beams is not None else s.num_beams
  common = dict(max_new_tokens=FLAGS.max_new_tokens or s.length, eos_id=tok.eos_id, pad_id=tok.pad_id)
  beam = dict(num_beams=beams, length_penalty=s.length_penalty,
              length_penalty_style=s.length_penalty_style)
  sampling = dict(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
  rng = jax.random.key(config.seed)
  if model_cfg.family == "encoder_decoder":
    # As the seq2seq pipeline (and Marian) feed it: the source ends with EOS, padded on the
    # right; decoding starts from the pad id.
    rows = [list(tok.encode(p)) + [tok.eos_id] for p in prompts]
    source = np.full((len(rows), max(map(len, rows))), tok.pad_id, np.int32)
    mask = np.zeros_like(source)
    for i, row in enumerate(rows):
      source[i, :len(row)], mask[i, :len(row)] = row, 1
    if beams > 1:
      out = beam_search.beam_search_seq2seq(model, params, source, mask, start_id=tok.pad_id,
                                            **common, **beam)
    else:
      out = decoding.generate_seq2seq(model, params, source, mask, rng, start_id=tok.pad_id,
                                      **common, **sampling)
  elif model_cfg.family == "decoder":
    # An empty prompt starts from EOS, the document separator the model was trained with.
    tokens, lengths = decoding.left_pad([list(tok.encode(p)) or [tok.eos_id] for p in prompts],
                                        tok.pad_id)
    if beams > 1:
      out = beam_search.beam_search(model, params, tokens, lengths, **common, **beam)
    else:
      out = decoding.generate(model, params, tokens, lengths, rng, **common, **sampling)
  else:
    raise ValueError(f"--mode=generate needs a decoder or encoder_decoder model; "
                     f"config.model.family is {model_cfg.family!r}.")
  generated = np.asarray(out.tokens[:, 0] if beams > 1 else out.tokens)
  for i, (prompt, row) in enumerate(zip(prompts, generated)):
    print(f"--- {i}: {prompt}\n{tok.decode(row)}\n", flush=True)


def export_mode() -> None:
  """Writes the workdir's latest parameters as a Hugging Face model directory."""
  from jtrans import hf
  from jtrans.models import ModelConfig
  if not (FLAGS.workdir and FLAGS.hf_dir):
    raise app.UsageError("--mode=export needs --workdir (the run to export) and --hf_dir (where "
                         "to write config.json and model.safetensors).")
  import jax
  params = jax.device_get(restore_params(FLAGS.config, FLAGS.workdir))
  hf.save_pretrained(FLAGS.hf_dir, ModelConfig.from_config(FLAGS.config.model), params)
  print(f"wrote {FLAGS.hf_dir}: load it with transformers' from_pretrained.", flush=True)


if __name__ == "__main__":
  app.run(main)
