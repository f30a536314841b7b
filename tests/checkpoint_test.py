"""Damaged checkpoints: a relaunch falls back to the previous intact step, or names the path.

Each case damages the latest step (4) of a run interrupted there, as a crash, a full disk or a
bad copy would, then relaunches it: the run must resume from step 2 and end bit-identical to an
uninterrupted run (the same history from step 2 on), with the damaged step moved aside.
"""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from jtrans import checkpoint, parts, train
from tests.train_test import final_params


def _array_files(step_dir):
  """The files that hold the state's array bytes (OCDBT data files under `d/` folders)."""
  return [
    f
    for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    if os.path.isfile(f)
  ]


def _largest_array_file(step_dir):
  return max(_array_files(step_dir), key=os.path.getsize)


def _overwrite_array_bytes(step_dir):
  """Flips bytes spread over the largest array file, in place: sizes and names stay right."""
  path = _largest_array_file(step_dir)
  data = bytearray(open(path, "rb").read())
  for i in range(1, 33):
    data[i * len(data) // 34] ^= 0x5A
  with open(path, "r+b") as f:
    f.write(data)


def _arrays_of_step_2(step_dir):
  """A bad copy: step 2's array files under step 4's name. Every file is well formed, so only
  the fingerprint taken when step 4 was saved can tell."""
  shutil.rmtree(os.path.join(step_dir, "state"))
  shutil.copytree(
    os.path.join(os.path.dirname(step_dir), "2", "state"), os.path.join(step_dir, "state")
  )


DAMAGE = {
  "checkpoint_metadata_missing": lambda d: os.remove(os.path.join(d, "_CHECKPOINT_METADATA")),
  "state_metadata_missing": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
  "array_file_truncated": lambda d: open(_largest_array_file(d), "r+b").truncate(100),
  "array_bytes_overwritten": _overwrite_array_bytes,
  "arrays_of_another_step": _arrays_of_step_2,
  "iterator_json_garbled": lambda d: open(os.path.join(d, "data_state", "metadata"), "w").write(
    '{"parent": [1, '
  ),
  "step_directory_empty": lambda d: (shutil.rmtree(d), os.makedirs(d)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """(config, the uninterrupted run's final params, a run stopped at step 4 to copy)."""
  from tests.conftest import lm

  c = lm.get_config("tiny")
  c.data.data_dir = data_dir
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 1, 32, 2, 64
  c.model.max_len = c.data.seq_len = 32
  c.train.batch_size, c.train.steps, c.train.eval_batches = 8, 6, 1
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 2, 6, 2
  c.train.keep_checkpoints, c.optim.warmup_steps, c.sample.num_samples = 5, 2, 0
  root = tmp_path_factory.mktemp("damage")
  train.train(c, str(root / "straight"))
  train.train(c, str(root / "interrupted"), stop_at=4)
  return c, final_params(str(root / "straight"))[1], root / "interrupted"


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_latest_step_resumes_from_the_one_before(runs, tmp_path, case, capsys):
  c, want, interrupted = runs
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir)
  DAMAGE[case](str(workdir / "checkpoints" / "4"))
  train.train(c, str(workdir))
  out = capsys.readouterr().out
  assert f"checkpoint {workdir / 'checkpoints' / '4'} cannot be restored" in out, out
  assert "resumed from step 2" in out
  # Flipped bytes in a compressed chunk fail to decode or decode to other numbers (it depends on
  # where they land, so either check may catch them); another step's arrays decode cleanly.
  if case == "arrays_of_another_step":
    assert "differ from the fingerprint taken at save time" in out, out
  step, got = final_params(str(workdir))
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, want, got)
  assert os.listdir(workdir / checkpoint.DAMAGED_DIR)[0].startswith("4-")


def test_no_intact_step_fails_naming_the_directory_and_each_problem(runs, tmp_path):
  c, _, interrupted = runs
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir)
  DAMAGE["state_metadata_missing"](str(workdir / "checkpoints" / "4"))
  DAMAGE["iterator_json_garbled"](str(workdir / "checkpoints" / "2"))
  with pytest.raises(checkpoint.CheckpointError) as error:
    train.train(c, str(workdir))
  message = str(error.value)
  assert f"none of the 2 checkpoints in {workdir / 'checkpoints'}" in message
  assert "checkpoints/4: " in message and "checkpoints/2: JSONDecodeError" in message
  assert sorted(os.listdir(workdir / "checkpoints")) == [
    "2",
    "4",
  ]  # Nothing moved: no silent restart.


def test_reading_a_workdir_that_is_training_moves_and_deletes_nothing(runs, tmp_path):
  """Evaluation, sampling and export read a workdir whose run may still be writing it: the
  half-written step in flight stays, a damaged step is skipped but left for the trainer."""
  c, _, interrupted = runs
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir)
  in_flight = workdir / "checkpoints" / "6.orbax-checkpoint-tmp"
  shutil.copytree(workdir / "checkpoints" / "2", in_flight)
  DAMAGE["state_metadata_missing"](str(workdir / "checkpoints" / "4"))
  before = sorted(os.listdir(workdir / "checkpoints"))
  state, step = train.restore_latest(c, str(workdir), parts.build_layout(c).abstract)
  assert step == 2 and int(state.step) == 2
  assert sorted(os.listdir(workdir / "checkpoints")) == before
  assert not (workdir / checkpoint.DAMAGED_DIR).exists()
