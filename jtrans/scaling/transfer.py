"""`--mode=analyze` of a hyperparameter-transfer sweep: learning rate x width (or x depth).

A sweep is a transfer sweep when at least two widths (or depths) were each trained at three or
more learning rates (configs/sweeps/cpu_mup_transfer.py, cpu_completep_depth.py). For each
parametrisation and size the loss-optimal learning rate is the grid point with the lowest
final eval loss; its drift is how many grid steps (factors of the grid's ratio) it moves from
the smallest size to the largest. muP should hold it to about one step across widths, and
standard parametrisation should not (Yang et al. 2022, figure 1). Writes transfer.json,
transfer.md and transfer.png (loss against learning rate, a line per size, a panel per
parametrisation) into the sweep's directory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections import defaultdict

import numpy as np

from jtrans import storage
from jtrans.scaling import report


@dataclasses.dataclass
class Point:
  """One run of the sweep: its parametrisation, shape, learning rate and final eval loss."""

  name: str
  parametrization: str
  width: int
  depth: int
  lr: float
  loss: float | None  # None: unfinished; inf: diverged (not finite).


def collect(workdir: str) -> list[Point]:
  points = []
  for run in report.collect(workdir):
    model = json.loads((storage.path(workdir) / run.name / "config.json").read_text())["model"]
    loss = run.loss if run.loss is None or np.isfinite(run.loss) else math.inf
    points.append(
      Point(
        run.name,
        model.get("parametrization", "standard"),
        model["embed_dim"],
        model["num_layers"],
        run.lr,
        loss,
      )
    )
  return points


def size_axis(points: list[Point]) -> str | None:
  """ "width" or "depth": the axis that varies with at least two sizes of 3+ learning rates
  each (width first); None when the sweep is not a transfer sweep."""
  for axis in ("width", "depth"):
    rates = defaultdict(set)
    for p in points:
      rates[getattr(p, axis)].add(p.lr)
    if sum(len(r) >= 3 for r in rates.values()) >= 2:
      return axis
  return None


def optima(points: list[Point], axis: str) -> dict[str, dict[int, Point]]:
  """{parametrisation: {size: the finished run with the lowest loss}}."""
  best: dict[str, dict[int, Point]] = defaultdict(dict)
  for p in points:
    if p.loss is None or not np.isfinite(p.loss):
      continue
    size = getattr(p, axis)
    if size not in best[p.parametrization] or p.loss < best[p.parametrization][size].loss:
      best[p.parametrization][size] = p
  return dict(best)


def grid_ratio(points: list[Point]) -> float:
  """The learning-rate grid's step: the median ratio of neighbouring rates (2 for powers of 2)."""
  rates = sorted({p.lr for p in points})
  return float(np.median(np.array(rates[1:]) / np.array(rates[:-1]))) if len(rates) > 1 else 2.0


def drift(best: dict[int, Point], ratio: float) -> float:
  """Grid steps between the optimum at the smallest size and at the largest (signed: negative
  when the larger size wants a smaller learning rate)."""
  small, large = best[min(best)], best[max(best)]
  return math.log(large.lr / small.lr) / math.log(ratio)


def plot(path: storage.PathLike, points: list[Point], axis: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = sorted({p.parametrization for p in points})
  finite = [p.loss for p in points if p.loss is not None and np.isfinite(p.loss)]
  top = min(max(finite), min(finite) + 1.5) if finite else None  # Diverged runs off the top.
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
  best = optima(points, axis)
  for ax, name in zip(axes[0], names):
    sizes = sorted({getattr(p, axis) for p in points if p.parametrization == name})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for size, color in zip(sizes, colors):
      run = sorted(
        (p for p in points if p.parametrization == name and getattr(p, axis) == size),
        key=lambda p: p.lr,
      )
      losses = [p.loss if p.loss is not None and np.isfinite(p.loss) else np.nan for p in run]
      ax.plot([p.lr for p in run], losses, marker="o", color=color, label=f"{axis} {size}")
      if size in best.get(name, {}):
        ax.plot(best[name][size].lr, best[name][size].loss, marker="*", ms=14, color=color)
    ax.set_xscale("log", base=2)
    if top is not None:
      ax.set_ylim(top=top)
    ax.set_title(f"{name}: final eval loss against learning rate")
    ax.set_xlabel("learning rate (optim.lr)")
    ax.set_ylabel("eval loss (nats per token)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format="png", dpi=110)
  plt.close(fig)
  storage.write_bytes(path, image.getvalue())


def analyze(workdir: str) -> str:
  """The optimum per parametrisation and size, its drift, the plot; written and returned."""
  points = collect(workdir)
  axis = size_axis(points)
  if axis is None:
    raise ValueError(
      f"{workdir}: not a learning-rate transfer sweep (see jtrans/scaling/transfer.py)."
    )
  ratio, best = grid_ratio(points), optima(points, axis)
  lines = [
    f"# Learning-rate transfer across {axis}",
    "",
    f"Loss-optimal learning rate per {axis} (final eval loss in brackets); drift in grid steps "
    f"(x{ratio:g}) from the smallest {axis} to the largest.",
    "",
    "| parametrization | "
    + " | ".join(f"{axis} {s}" for s in sorted({getattr(p, axis) for p in points}))
    + " | drift |",
  ]
  sizes = sorted({getattr(p, axis) for p in points})
  lines.append("|---|" + "---:|" * (len(sizes) + 1))
  summary = {}
  for name in sorted(best):
    cells = [
      f"{best[name][s].lr:.3g} ({best[name][s].loss:.3f})" if s in best[name] else "-"
      for s in sizes
    ]
    steps = drift(best[name], ratio) if len(best[name]) > 1 else 0.0
    summary[name] = {
      "optimal_lr": {str(s): best[name][s].lr for s in best[name]},
      "loss": {str(s): best[name][s].loss for s in best[name]},
      "drift_grid_steps": steps,
    }
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {steps:+.1f} |")
  unfinished = [p.name for p in points if p.loss is None]
  diverged = [p.name for p in points if p.loss is not None and not np.isfinite(p.loss)]
  if unfinished:
    lines.append(f"\n{len(unfinished)} unfinished run(s) left out: {', '.join(unfinished)}.")
  if diverged:
    lines.append(f"\nDiverged (loss not finite): {', '.join(diverged)}.")
  root = storage.path(workdir)
  plot(root / "transfer.png", points, axis)
  lines.append("\nPlot: transfer.png")
  text = "\n".join(lines) + "\n"
  storage.write_text(root / "transfer.md", text)
  storage.write_text(
    root / "transfer.json",
    json.dumps(
      {
        "axis": axis,
        "grid_ratio": ratio,
        "optima": summary,
        "runs": [dataclasses.asdict(p) for p in points],
      },
      indent=2,
    ),
  )
  return text


def applies(workdir: str) -> bool:
  """Whether `workdir` holds a transfer sweep (what --mode=analyze then reports)."""
  return size_axis(collect(workdir)) is not None
