"""Where metrics go: a progress line, `metrics.jsonl` and TensorBoard events (process 0 only)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping

import jax

from jtrans import storage


def _import_tensorboardx():
  """tensorboardX's event writer and scalar summary. Its package imports torch whenever torch
  is installed (2 s of every start-up), for torch tensors that jtrans never passes: torch is
  hidden while it loads, then importable again."""
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects.
  try:
    from tensorboardX.event_file_writer import EventFileWriter
    from tensorboardX.proto import event_pb2
    from tensorboardX.summary import scalar
  finally:
    if hidden:
      del sys.modules["torch"]
  return EventFileWriter, event_pb2, scalar


EventFileWriter, event_pb2, scalar = _import_tensorboardx()


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(
  step: int,
  total: int,
  scalars: Mapping[str, float],
  tokens_per_second: float,
  mfu: float,
  eta_seconds: float,
) -> str:
  """`step 100/1200 | loss 2.3456 | lr 1.20e-03 | 51.2k tok/s | MFU 12.3% | ETA 2m10s`; a loss
  under 0.01 in three significant digits (`3.65e-07`), not as 0.0000."""
  loss = scalars["loss"]
  loss_text = f"{loss:.4f}" if not 0 < abs(loss) < 0.01 else f"{loss:.3g}"
  return (
    f"step {step}/{total} | loss {loss_text} | lr {scalars['learning_rate']:.2e} | "
    f"{tokens_per_second / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}% | "
    f"ETA {format_duration(eta_seconds)}"
  )


class MetricsWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tensorboard`.

  Only process 0 writes; on the others every call is a no-op. `resumed_from` is the step a
  resumed run restored: records past it were written by the steps that are now run again,
  so they are dropped and `metrics.jsonl` keeps each (step, split) once.
  """

  def __init__(self, workdir: str, resumed_from: int | None = None):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      workdir = storage.path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._path = workdir / "metrics.jsonl"
      # Object stores (gs://) cannot append: there the lines are kept and each write uploads
      # the whole file again (small: one line per log step); a local file is appended to.
      remote = storage.is_remote(workdir)
      self._lines = []
      if (remote or resumed_from is not None) and self._path.exists():
        self._lines = self._path.read_text().splitlines(keepends=True)
        if resumed_from is not None:
          self._lines = [
            line
            for line in self._lines
            if line.strip() and json.loads(line)["step"] <= resumed_from
          ]
          storage.write_text(self._path, "".join(self._lines))
      self._jsonl = None if remote else self._path.open("a")
      self._tb = EventFileWriter(os.fspath(workdir / "tensorboard"))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, "split": split, **{k: float(v) for k, v in scalars.items()}}
    line = json.dumps(record) + "\n"
    if self._jsonl is None:
      self._lines.append(line)
      storage.write_text(self._path, "".join(self._lines))
    else:
      self._jsonl.write(line)
      self._jsonl.flush()
    for name, value in scalars.items():
      summary = scalar(f"{split}/{name}", float(value))
      self._tb.add_event(event_pb2.Event(summary=summary, step=step, wall_time=time.time()))
    self._tb.flush()

  def log(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self.enabled:
      if self._jsonl is not None:
        self._jsonl.close()
      self._tb.close()
