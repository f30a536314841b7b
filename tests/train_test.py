"""The train loop: compile-once, resume exactness, NaN handling and clear errors."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jtrans import optim, sharding, steps, train
from jtrans.models import build_model


def final_params(workdir):
  """Parameters of the latest checkpoint in workdir, as numpy."""
  path = os.path.join(workdir, "checkpoints")
  with ocp.CheckpointManager(path) as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, jax.tree.map(np.asarray, restored["state"]["params"])


def test_train_step_compiles_once_and_loss_falls(tiny_config):
  c = tiny_config
  mesh = sharding.make_mesh(c.mesh)
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  state, shardings, _ = train.init_state(model, tx, c, mesh)
  train_fn = steps.jit_engine(model, tx, c, mesh, shardings).train_step
  batches = iter(train.make_dataset(c, train=True))
  first = next(batches)
  losses = []
  with jax.set_mesh(mesh):
    for _ in range(4):  # The same batch: the loss must fall.
      state, metrics = train_fn(state, sharding.global_batch(first, mesh))
      losses.append(float(metrics["loss"]))
    for _ in range(3):  # New data, same shapes: no new compilation.
      state, metrics = train_fn(state, sharding.global_batch(next(batches), mesh))
  assert train_fn._cache_size() == 1, "the train step was compiled more than once"
  assert int(state.step) == 7
  assert losses[-1] < losses[0] - 0.05, losses


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_config, tmp_path):
  c = tiny_config
  train.train(c, str(tmp_path / "straight"))
  interrupted = str(tmp_path / "interrupted")
  state = train.train(c, interrupted, stop_at=4)  # Like a pre-emption after step 4.
  assert int(state.step) == 4
  assert final_params(interrupted)[0] == 4
  train.train(c, interrupted)
  step_a, a = final_params(str(tmp_path / "straight"))
  step_b, b = final_params(interrupted)
  assert step_a == step_b == c.train.steps
  jax.tree.map(np.testing.assert_array_equal, a, b)
  records = [json.loads(line) for line in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert {r["split"] for r in records} == {"train", "eval"}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  c = tiny_config
  workdir = str(tmp_path)
  train.train(c, workdir, stop_at=3)
  good_step, good = final_params(workdir)
  c.optim.lr = 1e30  # Parameters overflow within a step or two.
  c.optim.schedule, c.optim.warmup_steps = "constant", 0
  c.train.log_every = 1
  with pytest.raises(FloatingPointError, match=r"config.optim.lr.*|last good checkpoint"):
    train.train(c, workdir)
  step, after = final_params(workdir)
  assert step == good_step == 3
  jax.tree.map(np.testing.assert_array_equal, good, after)


def test_batch_that_the_mesh_cannot_split_names_the_setting(tiny_config, tmp_path):
  c = tiny_config
  c.train.batch_size = 12  # 8 devices on the data axis.
  with pytest.raises(ValueError, match="config.train.batch_size=12"):
    train.train(c, str(tmp_path))


def test_mesh_that_does_not_match_the_devices_names_the_setting(tiny_config, tmp_path):
  c = tiny_config
  c.mesh.data, c.mesh.tensor = 3, 2
  with pytest.raises(ValueError, match="config.mesh"):
    train.train(c, str(tmp_path))


def test_seq_len_longer_than_the_model_names_the_setting(tiny_config, tmp_path):
  c = tiny_config
  c.data.seq_len = 64
  with pytest.raises(ValueError, match="config.data.seq_len=64"):
    train.train(c, str(tmp_path))
