"""A run's training curves as a PNG: each metric's train and eval records against the step.

  python -m jtrans.experiments.curves runs/grokking --metrics=loss,accuracy --log_steps \\
      --out=experiments/grokking/curves.png

One panel per metric, train (every logged step) and eval (every evaluation) on the same axes;
`--log_steps` puts the steps on a log axis (grokking: memorisation in the first thousand
steps, generalisation ten thousand later), and a metric named like a loss gets a log y axis.
The workdir may be local or gs://. Prints, per metric and split, the last value and the first
step at which `--threshold` (for accuracies) was reached.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")  # Before pyplot: files only, on machines without a display.
import matplotlib.pyplot as plt  # noqa: E402

from jtrans import storage  # noqa: E402
from jtrans.experiments import check  # noqa: E402

SPLITS = {"train": "tab:blue", "eval": "tab:red"}


def series(records: list[dict], split: str, metric: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `split`'s records that hold `metric`, in step order."""
  rows = sorted(
    (r["step"], float(r[metric])) for r in records if r.get("split") == split and metric in r
  )
  return [s for s, _ in rows], [v for _, v in rows]


def first_step_at(steps: list[int], values: list[float], threshold: float) -> int | None:
  """The first step whose value is at least `threshold` (None: never)."""
  return next((s for s, v in zip(steps, values) if v >= threshold), None)


def plot(
  records: list[dict], metrics: list[str], out: str, log_steps: bool = False, title: str = ""
) -> None:
  """Writes the panels of `metrics` (see the module docstring) to the PNG `out`."""
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for split, color in SPLITS.items():
      steps, values = series(records, split, metric)
      if steps:
        ax.plot(steps, values, color=color, label=split, marker="." if split == "eval" else None)
    if log_steps:
      ax.set_xscale("log")
    if "loss" in metric or metric == "nll":
      ax.set_yscale("log", nonpositive="clip")  # A float32 loss of exactly 0 stays drawn.
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  buffer = storage.path(out)
  with buffer.open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)


def summary(records: list[dict], metrics: list[str], threshold: float) -> str:
  lines = []
  for metric in metrics:
    for split in SPLITS:
      steps, values = series(records, split, metric)
      if not steps:
        continue
      line = f"{split} {metric}: {values[-1]:.4g} at step {steps[-1]}"
      if "accuracy" in metric:
        first = first_step_at(steps, values, threshold)
        line += f"; first >= {threshold:g} at step {first if first is not None else 'never'}"
      lines.append(line)
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir", help="the run's --workdir (its metrics.jsonl)")
  parser.add_argument("--metrics", default="loss,accuracy", help="comma-separated metric names")
  parser.add_argument("--out", default="", help="the PNG to write (default: <workdir>/curves.png)")
  parser.add_argument("--log_steps", action="store_true", help="steps on a log axis")
  parser.add_argument("--threshold", type=float, default=0.99, help="accuracy to report reaching")
  parser.add_argument("--title", default="", help="the figure's title")
  args = parser.parse_args(argv)
  metrics = [m for m in args.metrics.split(",") if m]
  try:
    records = check.read_metrics(args.workdir)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  missing = [m for m in metrics if not any(m in r for r in records)]
  if missing:
    known = sorted({k for r in records for k in r} - {"step", "split"})
    print(
      f"error: --metrics={args.metrics}: {missing} not in the run's records; it has {known}.",
      file=sys.stderr,
    )
    return 2
  out = args.out or str(storage.path(args.workdir) / "curves.png")
  plot(records, metrics, out, args.log_steps, args.title)
  print(summary(records, metrics, args.threshold))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
