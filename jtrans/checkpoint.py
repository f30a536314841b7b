"""Checkpoints: the train state, the data iterator's position and a fingerprint, saved together.

Layout: `workdir/checkpoints/<step>/{state,data,fingerprint}`. Launching the same command on
the same workdir restores the latest step that reads back intact, so an interrupted,
pre-empted or crashed run continues exactly. A step that cannot be read (missing or truncated
files, an unparseable iterator state, array bytes that no longer match the fingerprint taken
at save time) is reported with its path, moved to `workdir/checkpoints_damaged/`, and the step
before it is tried; when none reads back, the error names the directory and each problem.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jtrans import storage

DAMAGED_DIR = "checkpoints_damaged"


def directory(workdir: str | epath.Path) -> epath.Path:
  """`workdir/checkpoints`, absolute when local (Orbax needs that); gs:// paths stay as they are."""
  return storage.path(workdir) / "checkpoints"


def make_manager(
  workdir: str, cfg: ml_collections.ConfigDict, *, read_only: bool = False
) -> ocp.CheckpointManager:
  """A manager that saves every `cfg.checkpoint_every` steps and keeps `cfg.keep_checkpoints`.

  `read_only` is for evaluation, sampling and export: such a manager writes, deletes and
  creates nothing, so it can read the workdir of a run that is still training (whose
  half-written step it must not remove) and it leaves no background clean-up running.
  """
  if read_only:
    options = ocp.CheckpointManagerOptions(
      read_only=True,
      create=False,
      max_to_keep=None,
      save_interval_steps=0,
      cleanup_tmp_directories=False,
    )
  else:
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=cfg.checkpoint_every,
      max_to_keep=cfg.keep_checkpoints,
      enable_async_checkpointing=cfg.async_checkpoints,
      cleanup_tmp_directories=True,  # Remove what a crash mid-save left behind.
    )
  return ocp.CheckpointManager(
    directory(workdir),
    options=options,
    item_handlers={
      "state": ocp.StandardCheckpointHandler(),
      # The data iterator's position: one JSON file, written by process 0. The
      # global batch of a step is the same on any number of processes, so a
      # run resumes on more or fewer hosts than it was saved from.
      "data_state": ocp.JsonCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler(),  # Older checkpoints only.
      "fingerprint": ocp.JsonCheckpointHandler(),
    },
  )


# ---------------------------------------------------------------- fingerprints


def _leaf_fingerprint(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(uint32 hash of the bytes, weighted by position; whether every value is finite).

  Integer sums wrap modulo 2^32 in any order, so the hash is the same on every mesh; odd
  weights make any single changed element change it.
  """
  size = np.dtype(x.dtype).itemsize
  bits = jax.lax.bitcast_convert_type(
    x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
  ).astype(jnp.uint32)
  weights = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, 0) if bits.ndim else jnp.uint32(0)
  for axis in range(1, bits.ndim):
    weights = weights * jnp.uint32(bits.shape[axis]) + jax.lax.broadcasted_iota(
      jnp.uint32, bits.shape, axis
    )
  digest = jnp.sum(bits * (weights * jnp.uint32(2654435761) + jnp.uint32(1)), dtype=jnp.uint32)
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
  return digest, finite


def _fingerprints_of(state: Any) -> tuple[Any, jax.Array]:
  leaves, treedef = jax.tree.flatten(state)
  pairs = [_leaf_fingerprint(x) for x in leaves]
  finite = jnp.all(jnp.stack([f for _, f in pairs])) if pairs else jnp.bool_(True)
  return jax.tree.unflatten(treedef, [d for d, _ in pairs]), finite


@functools.cache
def _fingerprints(replicated: jax.sharding.Sharding | None) -> Callable:
  """The compiled fingerprint pass, its scalars replicated on the state's mesh, so that every
  process (several on a pod) reads them."""
  return jax.jit(_fingerprints_of, out_shardings=replicated)


def fingerprint(state: Any) -> tuple[dict[str, int], bool]:
  """({leaf path: uint32 hash}, whether every floating-point value is finite), computed on the
  devices where the state lives: only one integer per leaf comes back to the host (to every
  host: the results are replicated)."""
  first = jax.tree.leaves(state)[0].sharding
  replicated = (
    jax.sharding.NamedSharding(first.mesh, jax.sharding.PartitionSpec())
    if isinstance(first, jax.sharding.NamedSharding)
    else None
  )
  digests, finite = _fingerprints(replicated)(state)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(digests))[0]
  return {jax.tree_util.keystr(path): int(value) for path, value in flat}, bool(finite)


# ---------------------------------------------------------------- save and restore


def save(
  manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any, force: bool = False
) -> bool:
  """Saves if `step` is due (or `force`); returns whether a save started.

  `data_iterator` is the training iterator positioned after the batches of steps 1..step.
  A state with a NaN or Inf anywhere is refused: it would become "the last good checkpoint".
  """
  digests, finite = fingerprint(state)
  if not finite:
    raise FloatingPointError(
      f"the train state at step {step} holds NaN or Inf values; it was "
      f"not saved, and {manager.directory} keeps its last good step "
      f"({manager.latest_step()})."
    )
  return manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_state=ocp.args.JsonSave(data_iterator.get_state()),
      fingerprint=ocp.args.JsonSave(digests),
    ),
    force=force,
  )


class CheckpointError(RuntimeError):
  """No checkpoint step in a directory could be restored."""


def _restore_step(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iterator: Any | None
) -> Any:
  step_dir = epath.Path(manager.directory) / str(step)
  # Orbax writes this file when it finalises a step; without it the step is incomplete.
  if not (step_dir / "_CHECKPOINT_METADATA").exists():
    raise FileNotFoundError("_CHECKPOINT_METADATA is missing: the save never finished")
  # Checkpoints written before fingerprints existed (or by hand, state only) restore unverified.
  verify = (step_dir / "fingerprint").exists()
  target = abstract_state
  if verify:  # Read the arrays as they were saved: the fingerprint is of those bytes.
    abstract_state = _as_saved(abstract_state, manager.item_metadata(step)["state"])
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if verify:
    items["fingerprint"] = ocp.args.JsonRestore()
  if data_iterator is not None and (step_dir / "data").exists():  # Written by older versions.
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  elif data_iterator is not None:
    items["data_state"] = ocp.args.JsonRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  if verify:
    saved = restored["fingerprint"]
    digests, _ = fingerprint(restored["state"])
    changed = sorted(k for k in digests if saved.get(k) != digests[k])
    if changed or set(saved) != set(digests):
      raise ValueError(
        f"array contents differ from the fingerprint taken at save time in "
        f"{len(changed)} of {len(digests)} arrays (first: {changed[:1]})"
      )
  state = restored["state"]
  if verify:  # A relaunch may store some leaves in another dtype (finetune.frozen_dtype).
    state = jax.tree.map(lambda x, t: x if x.dtype == t.dtype else x.astype(t.dtype), state, target)
  if "data_state" in items:  # Only once the whole step has read back intact.
    if restored["data_state"] is None:
      raise FileNotFoundError("the data iterator's state (data_state) is missing")
    data_iterator.set_state(restored["data_state"])
  return state


def _leaf_name(key_path: tuple) -> str:
  """A key path as Orbax names the saved array ("opt_state.inner_states.trained.mu.lora...")."""
  parts = []
  for k in key_path:
    for attribute in ("key", "name", "idx"):
      if hasattr(k, attribute):
        parts.append(str(getattr(k, attribute)))
        break
  return ".".join(parts)


def _as_saved(abstract_state: Any, metadata: Any) -> Any:
  """`abstract_state` with each leaf's dtype as the checkpoint stored it (the shapes and
  shardings stay the run's)."""
  saved = {
    getattr(m, "name", ""): m.dtype
    for m in jax.tree.leaves(metadata)
    if getattr(m, "dtype", None) is not None
  }

  def leaf(path, x):
    dtype = saved.get(_leaf_name(path))
    if dtype is None or dtype == x.dtype or not hasattr(x, "sharding"):
      return x
    return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)

  return jax.tree_util.tree_map_with_path(leaf, abstract_state)


def _quarantine(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves damaged steps out of the manager's directory (process 0; the others wait), so that
  the run writes those steps afresh and never mistakes them for good ones again."""
  if jax.process_index() == 0:
    damaged = epath.Path(manager.directory).parent / DAMAGED_DIR
    damaged.mkdir(parents=True, exist_ok=True)
    for step in steps:
      source = epath.Path(manager.directory) / str(step)
      if source.exists():
        storage.move_tree(source, damaged / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("jtrans: damaged checkpoints moved")
  manager.reload()


def restore(
  manager: ocp.CheckpointManager,
  abstract_state: Any,
  data_iterator: Any | None = None,
  log: Callable[[str], None] = print,
  quarantine: bool = True,
) -> tuple[Any, int] | None:
  """Restores the latest intact checkpoint into `abstract_state`'s shapes and shardings.

  `abstract_state` holds `jax.ShapeDtypeStruct`s with the shardings of the current mesh, so a
  checkpoint written on one mesh restores onto another. The data iterator, if given, is moved
  in place to its saved position. A step that fails to restore is reported through `log`,
  moved aside (left in place when `quarantine` is False, as a reader of another run's workdir
  must) and the previous step tried. Returns (state, step), or None when the directory
  holds no checkpoint at all; raises `CheckpointError` when it holds some and none restores.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  problems = []
  for step in steps:
    path = epath.Path(manager.directory) / str(step)
    try:
      state = _restore_step(manager, step, abstract_state, data_iterator)
    except Exception as error:  # pylint: disable=broad-except
      # What a damaged step raises depends on which file is hit (Orbax, TensorStore, JSON).
      reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
      problems.append(f"{path}: {reason}")
      log(f"checkpoint {path} cannot be restored ({reason}); trying the step before it.")
      continue
    if problems and quarantine:
      _quarantine(manager, steps[: len(problems)])
      log(
        f"damaged checkpoint steps {steps[: len(problems)]} moved to "
        f"{epath.Path(manager.directory).parent / DAMAGED_DIR}; resuming from step {step}."
      )
    elif problems:
      log(f"damaged checkpoint steps {steps[: len(problems)]} skipped; using step {step}.")
    return state, step
  raise CheckpointError(
    f"none of the {len(steps)} checkpoints in {manager.directory} can be restored: "
    + "; ".join(problems)
    + ". Move that directory away to start the run afresh, or restore "
    "it from a backup."
  )
