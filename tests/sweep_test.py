"""Sweeps: building points, and the runner's skip / resume / failure recording on a micro sweep."""

import glob
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from configs import base
from jtrans import train
from jtrans.models import ModelConfig
from jtrans.scaling import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {
  **os.environ,
  "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  "JAX_PLATFORMS": "cpu",
}


def test_product_and_zipped_build_points():
  sizes = sweep.zipped(
    sweep.axis("model.num_layers", [1, 2]), sweep.axis("model.embed_dim", [32, 64])
  )
  assert sizes == [
    {"model.num_layers": 1, "model.embed_dim": 32},
    {"model.num_layers": 2, "model.embed_dim": 64},
  ]
  points = sweep.product(sizes, sweep.axis("optim.lr", [1e-3, 3e-3, 1e-2]))
  assert len(points) == 6 and points[-1] == {
    "model.num_layers": 2,
    "model.embed_dim": 64,
    "optim.lr": 1e-2,
  }
  with pytest.raises(ValueError, match="lengths"):
    sweep.zipped(sweep.axis("a", [1]), sweep.axis("b", [1, 2]))


def test_apply_sets_dotted_keys_on_a_copy_and_rejects_unknown_ones():
  config = base.get_config()
  changed = sweep.apply(config, {"train.steps": 7, "model.num_layers": 3})
  assert (changed.train.steps, changed.model.num_layers) == (7, 3)
  assert config.train.steps != 7  # The base is untouched.
  with pytest.raises(KeyError, match="train.step'"):
    sweep.apply(config, {"train.step": 7})


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs/sweeps/*.py"))))
def test_every_sweep_file_builds_all_its_points(path):
  loaded = sweep.load(path)
  names = {loaded.name(i) for i in range(len(loaded.points))}
  assert len(names) == len(loaded.points)  # Distinct points, distinct directories.
  for i in range(len(loaded.points)):
    config = loaded.config(i)
    ModelConfig.from_config(config.model)  # Validates the shape, naming a bad key.
    assert config.data.seq_len <= config.model.max_len and config.train.steps > 0
    if config.data.name == "lm1b":  # TFDS's lm1b has train and test only.
      assert config.data.eval_split == "test", path


def test_a_sweep_file_takes_an_argument_as_config_files_do():
  """`file.py:arg` passes arg to get_config and get_sweep (an experiment's variant); gs://
  paths and a bare file keep their colons."""
  assert sweep.split_argument("experiments/scaling_laws/config.py:ci") == (
    "experiments/scaling_laws/config.py",
    "ci",
  )
  assert sweep.split_argument("gs://bucket/sweeps/ladder.py") == (
    "gs://bucket/sweeps/ladder.py",
    None,
  )
  assert sweep.split_argument("configs/sweeps/cpu_ladder.py") == (
    "configs/sweeps/cpu_ladder.py",
    None,
  )
  loaded = sweep.load(os.path.join(ROOT, "experiments/scaling_laws/config.py:ci"))
  assert loaded.base.experiment.variant == "ci" and len(loaded.points) == 3
  full = sweep.load(os.path.join(ROOT, "experiments/scaling_laws/config.py:cpu"))
  assert full.points == sweep.load(os.path.join(ROOT, "configs/sweeps/cpu_lr_size.py")).points


def micro_sweep(tiny_config):
  """Two points of a 1-layer model, six steps each; the first has a bad shape."""
  points = [
    {"model.num_heads": 5},  # Does not divide embed_dim=32: fails at start-up.
    {"seed": 1},
  ]
  return sweep.Sweep(path="micro", base=tiny_config, points=points)


def test_runner_records_failures_resumes_interrupted_points_and_skips_finished_ones(
  tiny_config, tmp_path
):
  loaded, workdir = micro_sweep(tiny_config), str(tmp_path)
  calls, logs = [], []

  def preempted_at_step_3(config, point_dir):
    """The first launch: the loop stops at step 3, saved, as on SIGTERM."""
    calls.append(os.path.basename(point_dir))
    return train.train(config, point_dir, stop_at=3)

  counts = sweep.run(loaded, workdir, train_fn=preempted_at_step_3, log=logs.append)
  assert counts == {"failed": 1, "interrupted": 1}  # The failure did not stop point 1.
  assert calls == [loaded.name(0), loaded.name(1)]
  status = json.load(open(os.path.join(workdir, sweep.STATUS_FILE)))
  failed, stopped = status["points"]
  assert failed["state"] == "failed" and "config.model.num_heads" in failed["error"]
  assert stopped["state"] == "interrupted" and stopped["step"] == 3
  point = json.load(open(os.path.join(workdir, loaded.name(0), sweep.POINT_FILE)))
  assert "Traceback" in point["traceback"] and point["attempts"] == 1

  def counted(config, point_dir):
    calls.append(os.path.basename(point_dir))
    return train.train(config, point_dir)

  calls.clear()
  counts = sweep.run(loaded, workdir, train_fn=counted, log=logs.append)
  assert counts == {"failed": 1, "done": 1}  # The failed point was retried, and failed again.
  assert calls == [loaded.name(0), loaded.name(1)]
  assert json.load(open(os.path.join(workdir, loaded.name(0), sweep.POINT_FILE)))["attempts"] == 2
  # Point 1 resumed from its step-3 checkpoint rather than starting over.
  with open(os.path.join(workdir, loaded.name(1), "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train_steps = [r["step"] for r in records if r["split"] == "train" and "loss" in r]
  assert train_steps == [2, 4, 6]
  assert [r["step"] for r in records if r["split"] == "eval"] == [3, 6]
  assert json.load(open(os.path.join(workdir, loaded.name(1), "config.json")))["seed"] == 1

  calls.clear()
  logs.clear()
  assert sweep.run(loaded, workdir, index=1, train_fn=counted, log=logs.append) == {
    "failed": 1,
    "done": 1,
  }
  assert calls == [] and "point 1 (" in logs[0] and "done, skipped" in logs[0]


def open_handles() -> tuple[int, int]:
  """(live threads, open file descriptors) of this process, once threads that are finishing
  have ended (an Orbax manager's background clean-up may outlive its run by a moment; a leaked
  thread never ends)."""
  counts = []
  for _ in range(60):  # At most 3 s: until the count has not changed for 0.25 s.
    counts.append(threading.active_count())
    if len(counts) > 5 and len(set(counts[-6:])) == 1:
      break
    time.sleep(0.05)
  return counts[-1], len(os.listdir("/proc/self/fd"))


def test_failing_points_leak_no_threads_or_files_and_a_wrong_type_is_one_failure(
  tiny_config, tmp_path
):
  """Points that fail mid-run (NaN after the checkpoint manager, writers and data iterators are
  open) one after another, in one process, as a sweep runs them; and a point whose override
  has the wrong type, which fails alone."""
  nan = {
    "optim.lr": 1e30,
    "optim.schedule": "constant",
    "optim.warmup_steps": 0,
    "train.log_every": 1,
  }
  points = [
    nan,
    {**nan, "seed": 1},
    {"train.batch_size": "eight"},
    {**nan, "seed": 2},
    {**nan, "seed": 3},
  ]
  loaded, handles = sweep.Sweep(path="nan", base=tiny_config, points=points), []

  def measured(config, point_dir):
    handles.append(open_handles())
    return train.train(config, point_dir)

  counts = sweep.run(loaded, str(tmp_path), train_fn=measured, log=lambda _: None)
  handles.append(open_handles())
  assert counts == {"failed": 5}
  errors = [p["error"] for p in json.load(open(tmp_path / sweep.STATUS_FILE))["points"]]
  assert "FloatingPointError" in errors[0] and "TypeError" in errors[2], errors
  # The first point may start process-wide pools (jax, Orbax); after it nothing may grow.
  assert handles[1] == handles[2] == handles[3] == handles[4], handles


def test_sweep_index_out_of_range_names_the_range(tiny_config, tmp_path):
  with pytest.raises(IndexError, match="points 0..1"):
    sweep.run(micro_sweep(tiny_config), str(tmp_path), index=2)


def test_run_py_dry_run_and_plan_need_no_workdir(data_dir):
  command = [sys.executable, "run.py", "--sweep=configs/sweeps/cpu_ladder.py", "--dry_run"]
  out = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| 4 |" in out.stdout and "Estimated time" in out.stdout and "MFU" in out.stdout
  out = subprocess.run(
    [sys.executable, "run.py", "--mode=plan", "--flops=1e18"],
    cwd=ROOT,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "configs/ladder.py:" in out.stdout and "Budget C = 1e+18" in out.stdout
