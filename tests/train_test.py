"""The train loop: compile-once, resume exactness, NaN handling and clear errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jtrans import checkpoint, optim, parts, sharding, steps, train
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
  state, shardings, _ = parts.init_state(model, tx, c, mesh)
  train_fn = steps.jit_engine(model, tx, c, mesh, shardings).train_step
  batches = iter(parts.make_dataset(c, train=True))
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
  state = train.train(c, interrupted, stop_at=3)  # Like a pre-emption after step 3.
  assert int(state.step) == 3
  assert final_params(interrupted)[0] == 3
  train.train(c, interrupted)
  step_a, a = final_params(str(tmp_path / "straight"))
  step_b, b = final_params(interrupted)
  assert step_a == step_b == c.train.steps
  jax.tree.map(np.testing.assert_array_equal, a, b)
  records = [json.loads(line) for line in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert {r["split"] for r in records} == {"train", "eval", "time"}
  # Each (step, split) once, though the resumed call's first step (4) is also a log step.
  assert len({(r["step"], r["split"]) for r in records}) == len(records), records
  # Each call records where its own wall time went (the end-of-training breakdown).
  assert [r["step"] for r in records if r["split"] == "time"] == [3, c.train.steps]


@pytest.mark.parametrize("experiment", ["dit_digits"])
def test_image_text_and_diffusion_runs_resume_bit_identically(experiment, data_dir, tmp_path):
  """The diffusion objective keeps the loop's guarantee: a DiT run (per-row timesteps, noise
  and label drops, dropout) pre-empted after step 2 and resumed ends with the parameters of
  the uninterrupted run. (CLIP's batches come from the same resumable image pipeline:
  tests/image_data_test.py.)"""
  import importlib

  recipe = importlib.import_module(f"experiments.{experiment}.config")
  c = recipe.get_config("ci")
  c.data.data_dir = data_dir
  c.model.num_layers, c.model.embed_dim, c.model.mlp_dim, c.model.dropout_rate = 1, 32, 64, 0.1
  if experiment == "clip_digits":
    c.model.text_num_layers, c.model.projection_dim = 1, 16
  c.train.batch_size, c.train.steps, c.train.eval_batches = 8, 4, 1
  c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 2
  c.sample.num_samples = 0
  run = parts.build(c)  # One build (one compile) for the three calls.
  train.train(c, str(tmp_path / "straight"), run=run)
  interrupted = str(tmp_path / "interrupted")
  assert int(train.train(c, interrupted, stop_at=2, run=run).step) == 2
  train.train(c, interrupted, run=run)
  (step_a, a), (step_b, b) = final_params(str(tmp_path / "straight")), final_params(interrupted)
  assert step_a == step_b == 4
  jax.tree.map(np.testing.assert_array_equal, a, b)


def poison_step(monkeypatch, first: int, last: int | None = None):
  """Makes steps first..last (1-based, as logged) produce a NaN loss and NaN gradients."""
  original = steps.apply_gradients

  def poisoned(state, grad_sum, sums, **kwargs):
    step = state.step + 1
    nan = jnp.where((step >= first) & (step <= (last or first)), jnp.nan, 1.0)
    return original(
      state,
      jax.tree.map(lambda g: g * nan, grad_sum),
      {**sums, "loss": sums["loss"] * nan},
      **kwargs,
    )

  monkeypatch.setattr(steps, "apply_gradients", poisoned)


def nan_config(c):
  """8 steps; logged at 4 and 8, saved at 3, 6 and 8: step 5 is neither logged nor saved."""
  c.train.steps, c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 8, 4, 3, 8
  c.train.keep_checkpoints = 5
  return c


def test_nan_at_a_step_neither_logged_nor_saved_never_reaches_a_checkpoint(
  tiny_config, tmp_path, monkeypatch
):
  c, workdir = nan_config(tiny_config), str(tmp_path)
  poison_step(monkeypatch, 5)
  with pytest.raises(FloatingPointError, match=r"not finite at step 5.*checkpoint \(step 3\)"):
    train.train(c, workdir)
  step, params = final_params(workdir)
  assert step == 3  # Step 6 followed the bad step 5: it was not saved.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nan_policy_skip_drops_the_bad_update_and_counts_it(tiny_config, tmp_path, monkeypatch):
  c, workdir = nan_config(tiny_config), str(tmp_path)
  c.train.nan_policy = "skip"
  poison_step(monkeypatch, 5)
  state = train.train(c, workdir)
  assert int(state.step) == 8
  step, params = final_params(workdir)
  assert step == 8 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  logged = {r["step"]: r for r in records if r["split"] == "train" and "loss" in r}
  assert (logged[4]["skipped_steps"], logged[8]["skipped_steps"]) == (0, 1)
  assert np.isfinite(logged[8]["loss"])


def test_nan_policy_skip_stops_after_too_many_in_a_row(tiny_config, tmp_path, monkeypatch):
  c, workdir = nan_config(tiny_config), str(tmp_path)
  c.train.nan_policy, c.train.max_skipped_steps = "skip", 2
  poison_step(monkeypatch, 5, 8)
  with pytest.raises(FloatingPointError, match="2 consecutive steps"):
    train.train(c, workdir)
  assert final_params(workdir)[0] == 3


def test_resume_with_a_changed_model_fails_naming_the_key(tiny_config, tmp_path, capsys):
  c, workdir = tiny_config, str(tmp_path)
  train.train(c, workdir, stop_at=3)
  wider = c.copy_and_resolve_references()
  wider.model.embed_dim = 64
  with pytest.raises(ValueError, match=r"model.embed_dim: 32 -> 64.*new --workdir"):
    train.train(wider, workdir)
  # A change outside model.* is fatal too when the state's shapes no longer match the checkpoint.
  other_lr = c.copy_and_resolve_references()
  other_lr.optim.lr = 0.5
  with checkpoint.make_manager(workdir, c.train) as manager:
    train.check_resume(
      other_lr, workdir, manager, parts.build_layout(c).abstract, print
    )  # Same shapes.
    with pytest.raises(ValueError, match=r"optim.lr: 0.003 -> 0.5"):
      train.check_resume(other_lr, workdir, manager, parts.build_layout(wider).abstract, print)
  longer = c.copy_and_resolve_references()
  longer.train.steps = 8
  assert int(train.train(longer, workdir).step) == 8
  assert "config changed on resume" in capsys.readouterr().out
  recorded = json.load(open(os.path.join(workdir, "config.json")))
  assert recorded["train"]["steps"] == 8 and recorded["model"]["embed_dim"] == 32


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


# One-step metrics of the default experiment (configs/lm.py:tiny, its init and optimizer) on a
# fixed batch of random bytes, as 8 devices compute them. Steps 1 and 3 (step 1 has lr 0).
GOLDEN = {1: (5.5765790939331055, 1.4720176458358765), 3: (5.530567169189453, 1.4045034646987915)}


def test_the_default_configs_first_steps_give_the_golden_metrics():
  from configs import lm

  c = lm.get_config("tiny")
  mesh = sharding.make_mesh(c.mesh)
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  state, shardings, _ = parts.init_state(model, tx, c, mesh)
  engine = steps.jit_engine(model, tx, c, mesh, shardings)
  rows = np.random.default_rng(0).integers(3, 259, (c.train.batch_size, c.data.seq_len + 1))
  batch = {
    "inputs": rows[:, :-1].astype(np.int32),
    "targets": rows[:, 1:].astype(np.int32),
    "weights": np.ones((c.train.batch_size, c.data.seq_len), np.float32),
  }
  got = {}
  with engine.context():
    for step in (1, 2, 3):
      state, metrics = engine.train_step(state, engine.place_batch(batch))
      got[step] = (float(metrics["loss"]), float(metrics["grad_norm"]))
  for step, want in GOLDEN.items():
    np.testing.assert_allclose(
      got[step],
      want,
      rtol=1e-6,
      err_msg=(
        f"step {step}: (loss, grad_norm) moved. If a change to the model, its init, the "
        "optimizer or the default config is meant to move them, check the default run's "
        "loss (make demo, README) and update GOLDEN with the new values; otherwise the "
        "change altered the numbers by accident."
      ),
    )


def test_a_training_start_builds_the_tokenizer_once(tiny_config, tmp_path, monkeypatch):
  """--mode=train as run.py runs it (train, then samples): the run's parts are built once, so
  config.data's tokenizer is constructed once, not by each part that needs it."""
  from jtrans import modes
  from jtrans.data import tokenizers

  built, real = [], tokenizers.from_config
  monkeypatch.setattr(tokenizers, "from_config", lambda *a, **k: built.append(1) or real(*a, **k))
  c = tiny_config
  c.sample.num_samples, c.sample.length, c.model.max_len = 2, 8, 64
  samples = modes.train(c, str(tmp_path))
  assert len(samples) == 2 and len(built) == 1, built


def test_the_progress_line_shows_a_tiny_loss_instead_of_zero():
  from jtrans import metrics

  line = lambda loss: metrics.progress_line(
    5, 10, {"loss": loss, "learning_rate": 1e-3}, 1e4, 0.1, 60
  )
  assert line(2.34567).startswith("step 5/10 | loss 2.3457 | lr 1.00e-03 |")
  assert "| loss 3.65e-07 |" in line(3.6512e-7) and "| loss 0.0000 |" in line(0.0)
