"""Checkpoints: the train state and the data iterator's position, saved together with Orbax.

Layout: `workdir/checkpoints/<step>/{state,data}`. Launching the same command on the same
workdir restores the latest step, so an interrupted or pre-empted run continues exactly.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp


def make_manager(workdir: str, cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """A manager that saves every `cfg.checkpoint_every` steps and keeps `cfg.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=cfg.checkpoint_every,
      max_to_keep=cfg.keep_checkpoints,
      enable_async_checkpointing=cfg.async_checkpoints,
      cleanup_tmp_directories=True,  # Remove what a crash mid-save left behind.
  )
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler()},
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any,
         force: bool = False) -> bool:
  """Saves if `step` is due (or `force`); returns whether a save started.

  `data_iterator` is the training iterator positioned after the batches of steps 1..step.
  """
  return manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator)),
      force=force)


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            data_iterator: Any | None = None) -> tuple[Any, int] | None:
  """Restores the latest checkpoint into `abstract_state`'s shapes and shardings.

  `abstract_state` holds `jax.ShapeDtypeStruct`s with the shardings of the current mesh, so a
  checkpoint written on one mesh restores onto another. The data iterator, if given, is moved
  in place to its saved position. Returns (state, step), or None when there is no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], step
