"""Sweeps: a base config and a list of overrides, run point by point, each in its own workdir.

A sweep file (configs/sweeps/*.py) exposes `get_config()` (the base) and `get_sweep()` (a list
of points, each a dict of dotted config keys -> values), built with `axis`, `product` and
`zipped`. Point i trains in `DIR/<i:03d>-<digest of its overrides>` with the ordinary
`jtrans.train.train`, which resumes from the point's own checkpoint. Each point records its
state in `DIR/<point>/sweep_point.json` ("running", "done", "failed" with the error, or
"interrupted"), and `DIR/sweep_status.json` gathers them all, so a relaunch skips finished
points, resumes interrupted ones and retries failed ones; one failure does not stop the rest.
Point files are written only by the process running that point, so a job array (one point
per job, `--sweep_index=i`) never has two writers on one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from etils import epath

from jtrans import storage

Override = dict[str, Any]
STATUS_FILE = "sweep_status.json"
POINT_FILE = "sweep_point.json"


# ---------------------------------------------------------------- building points


def axis(key: str, values: Sequence[Any]) -> list[Override]:
  """One key taking each of `values`: `[{key: v} for v in values]`."""
  return [{key: value} for value in values]


def product(*axes: Sequence[Override]) -> list[Override]:
  """Every combination of one point from each axis, merged (later axes win on shared keys)."""
  return [_merge(combo) for combo in itertools.product(*axes)]


def zipped(*axes: Sequence[Override]) -> list[Override]:
  """The i-th points of all axes merged together; the axes must have one length."""
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f"zipped: axes of different lengths {sorted(lengths)}.")
  return [_merge(combo) for combo in zip(*axes)]


def _merge(points: Sequence[Override]) -> Override:
  merged: Override = {}
  for point in points:
    merged.update(point)
  return merged


def apply(config: ml_collections.ConfigDict, overrides: Override) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set; an undeclared key fails, naming it."""
  config = config.copy_and_resolve_references()
  config.lock()  # Declared keys only, as on the command line.
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    try:
      for parent in parents:
        node = node[parent]
      if leaf not in node:
        raise KeyError(leaf)
    except KeyError:
      raise KeyError(f"sweep override {key!r}: no such config key (see configs/base.py).") from None
    node[leaf] = value
  return config


# ---------------------------------------------------------------- sweep files


@dataclasses.dataclass
class Sweep:
  """A loaded sweep file: where it came from, its base config and its points."""

  path: str
  base: ml_collections.ConfigDict
  points: list[Override]

  def name(self, index: int) -> str:
    """Point `index`'s directory name: its index and a digest of its overrides, so editing a
    sweep file gives edited points new directories instead of resuming someone else's run."""
    blob = json.dumps(self.points[index], sort_keys=True, default=str)
    return f"{index:03d}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

  def config(self, index: int, extra: Override | None = None) -> ml_collections.ConfigDict:
    """The base with point `index`'s overrides, then `extra` (command-line `--config.*`)."""
    return apply(apply(self.base, self.points[index]), extra or {})


def split_argument(path: str) -> tuple[str, str | None]:
  """`file.py:arg` -> (file.py, arg), as `--config` takes it; `gs://...` alone has none."""
  file, sep, arg = path.rpartition(":")
  if not sep or "/" in arg or not file.endswith(".py"):
    return path, None
  return file, arg


def load(path: str) -> Sweep:
  """Runs a sweep file (local or `gs://`, optionally `:arg`); it must define `get_config()` and
  `get_sweep()`, which take `arg` when one is given (an experiment's variant)."""
  file_name, arg = split_argument(path)
  file = storage.path(file_name)
  if not file.is_file():
    raise FileNotFoundError(f"--sweep={path}: no such file.")
  module = types.ModuleType(file.stem)
  module.__file__ = file_name
  exec(compile(file.read_text(), file_name, "exec"), module.__dict__)  # pylint: disable=exec-used
  for function in ("get_config", "get_sweep"):
    if not hasattr(module, function):
      raise AttributeError(f"--sweep={path}: the file defines no {function}().")
  args = () if arg is None else (arg,)
  points = list(module.get_sweep(*args))
  if not points:
    raise ValueError(f"--sweep={path}: get_sweep() returned no points.")
  return Sweep(path=path, base=module.get_config(*args), points=points)


# ---------------------------------------------------------------- status files


def _write_json(path: epath.Path, value: Any) -> None:
  """Writes the whole file at once (`storage.write_text`): a kill never leaves half a status file."""
  storage.write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_point(workdir: str, name: str) -> dict[str, Any]:
  """The point's recorded status, `{"state": "pending"}` when it never started."""
  path = storage.path(workdir) / name / POINT_FILE
  if not path.exists():
    return {"state": "pending"}
  return json.loads(path.read_text())


def write_summary(sweep: Sweep, workdir: str) -> dict[str, Any]:
  """Rebuilds `DIR/sweep_status.json` from the points' own files and returns it."""
  points = []
  for i in range(len(sweep.points)):
    status = read_point(workdir, sweep.name(i))
    points.append(
      {
        "index": i,
        "name": sweep.name(i),
        "overrides": sweep.points[i],
        **{k: status[k] for k in ("state", "error", "seconds", "step") if k in status},
      }
    )
  counts = {}
  for p in points:
    counts[p["state"]] = counts.get(p["state"], 0) + 1
  summary = {"sweep": sweep.path, "counts": counts, "points": points}
  _write_json(storage.path(workdir) / STATUS_FILE, summary)
  return summary


# ---------------------------------------------------------------- running


def run(
  sweep: Sweep,
  workdir: str,
  index: int | None = None,
  extra: Override | None = None,
  train_fn: Callable[[ml_collections.ConfigDict, str], Any] | None = None,
  log: Callable[[str], None] = print,
) -> dict[str, int]:
  """Runs every point (or only `index`) that is not done; returns counts of final states.

  A point whose training returns before `config.train.steps` (SIGTERM/SIGINT: the loop saved
  a checkpoint) ends the sweep as "interrupted"; relaunching resumes it. An exception in a
  point is recorded as "failed" with its message, and the next point starts.
  """
  import jax  # Here, so that building and listing sweeps needs no JAX.

  if train_fn is None:
    from jtrans import train

    train_fn = train.train
  if index is not None and not 0 <= index < len(sweep.points):
    raise IndexError(f"--sweep_index={index}: {sweep.path} has points 0..{len(sweep.points) - 1}.")
  records = jax.process_index() == 0  # On a multi-host job every host trains; one records.

  def record(point_dir: epath.Path, status: dict[str, Any]) -> None:
    if records:
      _write_json(point_dir / POINT_FILE, status)
      write_summary(sweep, workdir)

  root = storage.path(workdir)
  if records:
    root.mkdir(parents=True, exist_ok=True)
  for i in range(len(sweep.points)) if index is None else [index]:
    name = sweep.name(i)
    point_dir = root / name
    previous = read_point(workdir, name)
    if previous["state"] == "done":
      log(f"[sweep] point {i} ({name}): done, skipped")
      continue
    if records:
      point_dir.mkdir(parents=True, exist_ok=True)
    status = {
      "index": i,
      "name": name,
      "overrides": sweep.points[i],
      "attempts": previous.get("attempts", 0) + 1,
      "state": "running",
      "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    record(point_dir, status)
    verb = "starting" if previous["state"] == "pending" else "resuming"
    log(f"[sweep] point {i} ({name}): {verb} {json.dumps(sweep.points[i], default=str)}")
    began = time.perf_counter()
    try:
      # Built inside: a wrong override (a type the key does not take) fails this point only.
      config = sweep.config(i, extra)
      state = train_fn(config, os.fspath(point_dir))
    except Exception as error:  # pylint: disable=broad-except
      # Recorded, not raised: one bad point (NaN, a bad shape) must not cost the others.
      status.update(
        state="failed",
        error=f"{type(error).__name__}: {error}",
        traceback=traceback.format_exc()[-4000:],
      )
      log(f"[sweep] point {i} ({name}): FAILED: {status['error']}")
    except BaseException:
      record(point_dir, {**status, "state": "interrupted", "error": "KeyboardInterrupt/SystemExit"})
      raise
    else:
      step = int(state.step)
      status.update(step=step, state="done" if step >= config.train.steps else "interrupted")
    status["seconds"] = previous.get("seconds", 0.0) + time.perf_counter() - began
    status["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    record(point_dir, status)
    if status["state"] == "interrupted":
      log(f"[sweep] point {i} ({name}) stopped at step {status['step']}; relaunch to resume.")
      break
  summary = write_summary(sweep, workdir) if records else {"counts": {}}
  log(f"[sweep] {summary['counts']} in {root / STATUS_FILE}")
  return summary["counts"]


def _short(value: Any) -> str:
  return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
  minutes = seconds / 60
  return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:,.1f} h"


def dry_run_table(sweep: Sweep, extra: Override | None = None, workdir: str | None = None) -> str:
  """`--dry_run`: each point's N, D, C and estimated time on this machine (and its state)."""
  from jtrans.scaling import planner  # Here: counting needs jax, building sweeps does not.

  peak, mfu, how = planner.machine_speed()
  lines = [
    f"{sweep.path}: {len(sweep.points)} points",
    "",
    "| i | point | state | N (non-emb.) | D tokens | D/N | C FLOPs | est. time | overrides |",
    "|---:|---|---|---:|---:|---:|---:|---:|---|",
  ]
  total = 0.0
  # Only the keys that differ between points, so a row stays readable.
  keys = [
    k
    for k in dict.fromkeys(k for p in sweep.points for k in p)
    if len({json.dumps(p.get(k), default=str) for p in sweep.points}) > 1
  ]
  for i in range(len(sweep.points)):
    p = planner.plan_config(sweep.config(i, extra))
    seconds = planner.estimate_seconds(p, peak, mfu)
    state = read_point(workdir, sweep.name(i))["state"] if workdir else "-"
    total += 0.0 if state == "done" else seconds
    lines.append(
      f"| {i} | {sweep.name(i)} | {state} | {p.params:,} | {p.tokens:.3g} | "
      f"{p.tokens_per_param:.3g} | {p.flops:.3g} | {_duration(seconds)} | "
      f"{', '.join(f'{k}={_short(sweep.points[i].get(k))}' for k in keys)} |"
    )
  lines += ["", f"Estimated time of the points not done: {_duration(total)} ({how})."]
  return "\n".join(lines)
