"""run.py as a user launches it: a subprocess with flags, overrides and signals."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {
  **os.environ,
  "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  "JAX_PLATFORMS": "cpu",
}


def tiny_flags(data_dir, workdir, steps, **extra):
  flags = {
    "model.num_layers": 2,
    "model.embed_dim": 64,
    "model.num_heads": 2,
    "model.mlp_dim": 128,
    "model.max_len": 64,
    "data.seq_len": 64,
    "train.batch_size": 8,
    "train.steps": steps,
    "train.log_every": 10,
    "train.eval_every": steps,
    "train.checkpoint_every": steps,
    "train.eval_batches": 2,
    "optim.warmup_steps": 5,
    "data.data_dir": data_dir,
    "sample.num_samples": 2,
    "sample.length": 20,
    **extra,
  }
  return [sys.executable, "run.py", "--config=configs/lm.py:tiny", f"--workdir={workdir}"] + [
    f"--config.{k}={v}" for k, v in flags.items()
  ]


def run(args, **kwargs):
  return subprocess.run(
    args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, **kwargs
  )


def test_help_explains_the_flags():
  out = run([sys.executable, "run.py", "--help"])
  assert out.returncode == 1, out.stderr  # absl's --help exits with 1 by design.
  for flag in ("--config", "--workdir", "--mode"):
    assert flag in out.stdout


def test_train_then_eval_with_overrides_writes_the_workdir(data_dir, tmp_path):
  workdir = str(tmp_path)
  out = run(tiny_flags(data_dir, workdir, 20, **{"optim.lr": 0.002}))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 20/20 | loss" in out.stdout and "MFU" in out.stdout and "ETA" in out.stdout
  assert out.stdout.count("--- sample") == 2
  # The end-of-training breakdown (issue 14): where the wall time went, and the sampling.
  assert re.search(
    r"time: start-up [\d.]+s, compile [\d.]+s, data [\d.]+s, steps [\d.]+s, "
    r"eval [\d.]+s, checkpoint [\d.]+s; steps are \d+% of the time",
    out.stdout,
  )
  assert re.search(r"time: sampling [\d.]+s", out.stdout), out.stdout
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["optim"]["lr"] == 0.002 and config["train"]["steps"] == 20
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["split"] == "train" and "loss" in r] == [10, 20]
  (timed,) = [r for r in records if r["split"] == "time"]
  assert timed["step"] == 20 and timed["steps_seconds"] > 0 and timed["compile_seconds"] > 0
  assert 0 < timed["eval_seconds"] and 0 < timed["checkpoint_seconds"]
  assert any(
    name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard")
  )
  assert os.listdir(tmp_path / "checkpoints") == ["20"]

  recorded = open(os.path.join(workdir, "config.json")).read()
  evaluated = run(
    [sys.executable, "run.py", "--mode=eval", "--config=configs/lm.py:tiny", f"--workdir={workdir}"]
    + tiny_flags(data_dir, workdir, 20)[4:]
    + ["--config.optim.lr=0.5"]
  )
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert open(os.path.join(workdir, "config.json")).read() == recorded  # Training's record.
  scalars = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
  last_eval = [r for r in records if r["split"] == "eval"][-1]
  assert scalars["step"] == 20
  np.testing.assert_allclose(scalars["nll"], last_eval["nll"], rtol=1e-6)

  # Generation from the same checkpoint: prompts from the flag and from a file, greedy, so the
  # same prompt gives the same continuation whichever way it came in.
  (tmp_path / "prompts.txt").write_text("def \n\nThe \n")
  generated = run(
    [
      sys.executable,
      "run.py",
      "--mode=generate",
      "--config=configs/lm.py:tiny",
      f"--workdir={workdir}",
      "--prompt=def |The ",
      f"--prompt_file={tmp_path / 'prompts.txt'}",
      "--max_new_tokens=12",
      "--config.sample.temperature=0",
    ]
    + tiny_flags(data_dir, workdir, 20)[4:]
  )
  assert generated.returncode == 0, generated.stderr[-3000:]
  outputs = generated.stdout.split("--- ")[1:]
  assert [o.split("\n")[0] for o in outputs] == ["0: def ", "1: The ", "2: def ", "3: The "]
  texts = [o.split("\n", 1)[1].rstrip("\n") for o in outputs]  # The continuations alone.
  assert texts[0] == texts[2] and texts[1] == texts[3]


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--config.model.num_layer=3", "num_layer"),
    ("--config.model.num_heads=5", "config.model.num_heads"),
    ("--config.data.name=no_such_dataset_xyz", "config.data.name"),
  ],
)
def test_bad_settings_fail_with_the_settings_name(data_dir, tmp_path, flag, message):
  out = run(tiny_flags(data_dir, str(tmp_path), 2) + [flag])
  assert out.returncode != 0
  assert message in out.stderr


def last_line(text: str) -> str:
  return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("mode", ["eval", "generate"])
def test_a_workdir_without_checkpoint_ends_on_the_error(data_dir, tmp_path, mode):
  out = run(
    [
      sys.executable,
      "run.py",
      f"--mode={mode}",
      "--config=configs/lm.py:tiny",
      f"--workdir={tmp_path}",
      "--prompt=The ",
    ]
    + tiny_flags(data_dir, str(tmp_path), 2)[4:]
  )
  assert out.returncode == 1
  assert last_line(out.stderr).startswith(f"FileNotFoundError: no checkpoint in {tmp_path}"), (
    out.stderr[-2000:]
  )
  assert not (tmp_path / "config.json").exists()


def test_sigkill_and_resume_leave_each_step_once_in_metrics(data_dir, tmp_path):
  workdir = str(tmp_path)
  command = tiny_flags(
    data_dir,
    workdir,
    60,
    **{
      "train.log_every": 5,
      "train.checkpoint_every": 20,
      "train.eval_every": 20,
      "sample.num_samples": 0,
    },
  )
  proc = subprocess.Popen(
    command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  try:
    for line in proc.stdout:
      if line.startswith("step 35/"):  # Past the checkpoint at 20: steps 25..35 are logged twice.
        proc.kill()
        break
  finally:
    proc.kill()
    proc.wait()
  resumed = run(command)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 20" in resumed.stdout
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  logged = [(r["step"], r["split"]) for r in records if "loss" in r or "nll" in r]
  assert len(logged) == len(set(logged)), logged
  assert [s for s, split in logged if split == "train"] == list(range(5, 61, 5))
  assert [s for s, split in logged if split == "eval"] == [20, 40, 60]


def test_the_readmes_generate_command_runs_as_written(data_dir, tmp_path):
  """The README's `--mode=generate` line, on a checkpoint of the default config (2 steps)."""
  line = next(
    l
    for l in open(os.path.join(ROOT, "README.md"))
    if l.startswith("python run.py --mode=generate --config=configs/lm.py:tiny")
  )
  assert "--workdir=runs/demo" in line and "--max_new_tokens" not in line
  workdir = str(tmp_path)
  trained = run(
    [
      sys.executable,
      "run.py",
      "--config=configs/lm.py:tiny",
      f"--workdir={workdir}",
      "--config.train.steps=2",
      f"--config.data.data_dir={data_dir}",
      "--config.train.eval_batches=1",
      "--config.sample.num_samples=0",
    ]
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  command = shlex.split(line.split("#")[0].replace("runs/demo", workdir))
  generated = run([sys.executable] + command[1:])
  assert generated.returncode == 0, generated.stderr[-3000:]
  outputs = generated.stdout.split("--- ")[1:]
  assert [o.split("\n")[0] for o in outputs] == ["0: def ", "1: The "]
  # A length the learned position table cannot hold fails, naming both settings, last.
  too_long = run([sys.executable] + command[1:] + ["--max_new_tokens=100"])
  assert too_long.returncode == 1
  last = last_line(too_long.stderr)
  assert "config.model.max_len=64" in last and "config.sample.length" in last, last


def test_no_intact_checkpoint_ends_on_the_error_even_with_a_changed_config(data_dir, tmp_path):
  """Every step's state/_METADATA gone, relaunched with more steps: the error names the
  directory, as the last line (unreadable metadata must not pass for a different model)."""
  workdir = str(tmp_path)
  flags = tiny_flags(
    data_dir,
    workdir,
    4,
    **{"train.checkpoint_every": 2, "train.keep_checkpoints": 3, "sample.num_samples": 0},
  )
  assert run(flags).returncode == 0
  for step in ("2", "4"):
    os.remove(os.path.join(workdir, "checkpoints", step, "state", "_METADATA"))
  out = run(
    tiny_flags(
      data_dir,
      workdir,
      6,
      **{"train.checkpoint_every": 2, "train.keep_checkpoints": 3, "sample.num_samples": 0},
    )
  )
  assert out.returncode == 1
  assert last_line(out.stderr).startswith(
    f"jtrans.checkpoint.CheckpointError: none of the 2 checkpoints in {tmp_path}"
  ), out.stderr[-2000:]
  assert "config changed on resume" in out.stdout and "train.steps: 4 -> 6" in out.stdout


@pytest.mark.parametrize(
  "args, message",
  [
    (["--mode=train", "--hf_dir=/nonexistent"], "--mode=train needs --workdir."),
    (["--mode=generate", "--prompt=a"], "--mode=generate needs --workdir."),
    (["--mode=export", "--workdir=/nonexistent"], "--mode=export needs --hf_dir"),
  ],
)
def test_a_mode_missing_a_path_fails_naming_the_flag(args, message):
  """Only --mode=generate may take --hf_dir instead of --workdir; export needs both."""
  out = run([sys.executable, "run.py", *args])
  assert out.returncode == 1 and message in last_line(out.stderr), out.stderr[-2000:]


def test_a_relaunch_loads_its_programs_from_the_compilation_cache(data_dir, tmp_path):
  """run.py points JAX's persistent compilation cache at --compilation_cache_dir: the first
  launch stores its programs there and a relaunch of the same config (a fresh workdir, so it
  trains again) finds every one of them and stores nothing new. With the flag ignored the
  directory would stay empty."""
  cache = tmp_path / "xla-cache"

  def launch(workdir):
    flags = tiny_flags(data_dir, str(tmp_path / workdir), 2, **{"sample.num_samples": 0})
    out = run(flags + [f"--compilation_cache_dir={cache}"])
    assert out.returncode == 0, out.stderr[-3000:]
    return sorted(os.listdir(cache))

  first = launch("first")
  assert len(first) >= 2, first  # At least the train step and the eval step.
  assert launch("second") == first
