"""Where metrics go: a progress line, `metrics.jsonl` and TensorBoard events (process 0 only)."""
from __future__ import annotations

import json
from typing import Mapping

import jax
from etils import epath
from tensorboardX import SummaryWriter


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(step: int, total: int, scalars: Mapping[str, float], tokens_per_second: float,
                  mfu: float, eta_seconds: float) -> str:
  """`step 100/1200 | loss 2.3456 | lr 1.20e-03 | 51.2k tok/s | MFU 12.3% | ETA 2m10s`."""
  return (f"step {step}/{total} | loss {scalars['loss']:.4f} | lr {scalars['learning_rate']:.2e} | "
          f"{tokens_per_second / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}% | "
          f"ETA {format_duration(eta_seconds)}")


class MetricsWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tensorboard`.

  Only process 0 writes; on the others every call is a no-op. `resumed_from` is the step a
  resumed run restored: records past it were written by the steps that are now run again,
  so they are dropped and `metrics.jsonl` keeps each (step, split) once.
  """

  def __init__(self, workdir: str, resumed_from: int | None = None):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      workdir = epath.Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      path = workdir / "metrics.jsonl"
      if resumed_from is not None and path.exists():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resumed_from]
        tmp = workdir / "metrics.jsonl.tmp"
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
      self._jsonl = path.open("a")
      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, "split": split, **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(f"{split}/{name}", float(value), step)
    self._tb.flush()

  def log(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
