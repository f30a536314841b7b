"""PNG plots of a sweep's scaling laws (matplotlib, Agg backend: no display needed).

Each plot shows the data, each fitted law with its constants in the legend, solid over the
data's range and dashed where it extrapolates (to 30x beyond the largest point). Axes are
log-scaled where the law is a power law.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Before pyplot: files only, on machines without a display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from jtrans import storage
from jtrans.scaling import fits  # noqa: E402

EXTRAPOLATE = 30.0  # The fitted curves continue this factor past the largest point.
LOSS_LABEL = "eval loss (nats per token)"


def _law_curve(ax, law, lo: float, hi: float, label: str, color: str) -> None:
  """Solid over [lo, hi] (the data), dashed from hi to hi x EXTRAPOLATE."""
  inside = np.geomspace(lo, hi, 100)
  outside = np.geomspace(hi, hi * EXTRAPOLATE, 50)
  ax.plot(inside, law(inside), color=color, label=label)
  ax.plot(outside, law(outside), color=color, linestyle="--", label="  extrapolation")


def _finish(fig, ax, path: storage.PathLike, title: str) -> str:
  ax.set_title(title)
  if ax.get_yscale() == "log":  # Plain numbers (2.5, 3) rather than 10^0.4 on a short log axis.
    for axis in (ax.yaxis,):
      axis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
      axis.set_minor_formatter(ticker.FormatStrFormatter("%.3g"))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  image = io.BytesIO()  # Rendered in memory, then written whole: `path` may be on gs://.
  fig.savefig(image, format="png", dpi=120)
  plt.close(fig)
  storage.write_bytes(path, image.getvalue())
  return storage.path(path).name


def _power_law(fit: dict[str, Any]) -> fits.PowerLaw:
  return fits.PowerLaw(E=fit["E"], A=fit["A"], alpha=fit["alpha"], r2=fit["r2"])


def _chinchilla(fit: dict[str, Any]) -> fits.Chinchilla:
  return fits.Chinchilla(**{k: fit[k] for k in ("E", "A", "B", "alpha", "beta", "r2")})


def plot_params(path: storage.PathLike, runs, sizes, laws: dict[str, Any]) -> str:
  """Loss against N: every run, the best run per size, and L(N)."""
  fig, ax = plt.subplots(figsize=(7, 5))
  ax.scatter([r.params for r in runs], [r.loss for r in runs], s=14, color="0.6", label="runs")
  ax.scatter(
    [r.params for r in sizes],
    [r.loss for r in sizes],
    s=36,
    color="C0",
    label="best run per size",
    zorder=3,
  )
  if "loss_vs_params" in laws:
    f = laws["loss_vs_params"]
    _law_curve(
      ax,
      _power_law(f),
      sizes[0].params,
      sizes[-1].params,
      f"L(N) = {f['E']:.3f} + {f['A']:.3g} N^-{f['alpha']:.3f}  (R^2 = {f['r2']:.3f})",
      "C1",
    )
    ax.axhline(f["E"], color="0.4", linewidth=0.8, linestyle=":", label=f"E = {f['E']:.3f}")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("non-embedding parameters N")
  ax.set_ylabel(LOSS_LABEL)
  return _finish(fig, ax, path, "Loss against model size")


def plot_compute(path: storage.PathLike, runs, frontier, laws: dict[str, Any]) -> str:
  """Loss against C: each run's eval curve, the final points, the frontier, L(C) and the
  approach-3 frontier when there is one."""
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, r in enumerate(runs):
    c, loss = zip(*r.curve) if r.curve else ((), ())
    ax.plot(c, loss, color="0.75", linewidth=0.8, label="eval during training" if i == 0 else None)
  ax.scatter(
    [r.flops for r in runs], [r.loss for r in runs], s=14, color="0.45", label="final loss"
  )
  ax.plot(
    [r.flops for r in frontier],
    [r.loss for r in frontier],
    "o",
    color="C0",
    markersize=6,
    label="compute frontier",
    zorder=3,
  )
  lo, hi = frontier[0].flops, frontier[-1].flops
  if "loss_vs_compute" in laws:
    f = laws["loss_vs_compute"]
    _law_curve(
      ax,
      _power_law(f),
      lo,
      hi,
      f"L(C) = {f['E']:.3f} + {f['A']:.3g} C^-{f['alpha']:.3f}  (R^2 = {f['r2']:.3f})",
      "C1",
    )
  if "approach3" in laws:
    f = laws["approach3"]
    _law_curve(
      ax,
      _chinchilla(f).frontier,
      lo,
      hi,
      f"approach 3: {f['E']:.2f} + {f['A']:.3g}/N^"
      f"{f['alpha']:.2f} + {f['B']:.3g}/D^{f['beta']:.2f} at N_opt(C)",
      "C2",
    )
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("training compute C (FLOPs)")
  ax.set_ylabel(LOSS_LABEL)
  return _finish(fig, ax, path, "Loss against compute")


def plot_isoflop(path: storage.PathLike, runs, laws: dict[str, Any]) -> str:
  """Approach 2: loss against N per budget with its parabola (left); N_opt and D_opt against
  C with their power laws (right)."""
  iso = laws["approach2"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
  n = np.array([r.params for r in runs], float)
  c, loss = np.array([r.flops for r in runs]), np.array([r.loss for r in runs])
  labelled = False
  for k, group in enumerate(fits.group_budgets(c)):
    if len(group) < 3:
      continue
    g = np.array(group)
    color = f"C{k % 10}"
    budget = np.exp(np.log(c[g]).mean())
    left.scatter(n[g], loss[g], color=color, s=18, label=f"C = {budget:.2g} FLOPs")
    p = np.polyfit(np.log(n[g]), loss[g], 2)
    xs = np.geomspace(n[g].min() / 1.5, n[g].max() * 1.5, 100)
    left.plot(xs, np.polyval(p, np.log(xs)), color=color, linewidth=1)
    if p[0] > 0:  # A convex parabola: mark its minimum, this budget's N_opt.
      best = -p[1] / (2 * p[0])
      left.plot(
        np.exp(best),
        np.polyval(p, best),
        "*",
        color=color,
        markersize=12,
        markeredgecolor="k",
        label=None if labelled else "minimum (N_opt)",
      )
      labelled = True
  left.set_xscale("log")
  left.set_xlabel("non-embedding parameters N")
  left.set_ylabel(LOSS_LABEL)
  left.set_title("IsoFLOP curves (parabola in log N per budget)")
  left.grid(True, which="both", alpha=0.3)
  left.legend(fontsize=8)
  budgets = np.array(iso["budgets"])
  right.scatter(budgets, iso["n_opt"], color="C0", label="N_opt (parabola minima)")
  right.scatter(budgets, iso["d_opt"], color="C3", marker="s", label="D_opt (parabola minima)")

  def n_law(x):
    return iso["n_coef"] * x ** iso["a"]

  def d_law(x):
    return iso["d_coef"] * x ** iso["b"]

  lo, hi = budgets.min(), budgets.max()
  _law_curve(right, n_law, lo, hi, f"N_opt = {iso['n_coef']:.3g} C^{iso['a']:.3f}", "C0")
  _law_curve(right, d_law, lo, hi, f"D_opt = {iso['d_coef']:.3g} C^{iso['b']:.3f}", "C3")
  if "approach3" in laws:
    xs = np.geomspace(budgets.min(), budgets.max() * EXTRAPOLATE, 50)
    right.plot(
      xs,
      _chinchilla(laws["approach3"]).optimal_params(xs),
      color="C2",
      linestyle=":",
      label="N_opt from approach 3",
    )
  right.set_xscale("log")
  right.set_yscale("log")
  right.set_xlabel("training compute C (FLOPs)")
  right.set_ylabel("compute-optimal N (parameters) or D (tokens)")
  return _finish(fig, right, path, "Compute-optimal size and tokens (approach 2)")


def plot_accuracy(path: storage.PathLike, runs, frontier, laws: dict[str, Any]) -> str:
  """Task accuracy against C, each run's curve over its evaluations (left), beside the loss
  against C with L(C) (right): a smooth loss law next to an accuracy that may jump ("emergent"
  abilities, Wei et al. 2022; Schaeffer et al. 2023 on how the metric makes the jump)."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(runs)))
  for r, color in zip(sorted(runs, key=lambda r: r.params), colors):
    if r.accuracy_curve:
      c, accuracy = zip(*r.accuracy_curve)
      left.plot(c, accuracy, marker="o", ms=3, color=color, label=f"{r.name} (N={r.params:,})")
    if r.curve:
      c, loss = zip(*r.curve)
      right.plot(c, loss, color=color, linewidth=1)
  right.scatter([r.flops for r in runs], [r.loss for r in runs], s=14, color="0.3", zorder=3)
  if "loss_vs_compute" in laws and frontier:
    f = laws["loss_vs_compute"]
    _law_curve(
      right,
      _power_law(f),
      frontier[0].flops,
      frontier[-1].flops,
      f"L(C) = {f['E']:.3f} + {f['A']:.3g} C^-{f['alpha']:.3f}  (R^2 = {f['r2']:.3f})",
      "C1",
    )
  left.set_xscale("log")
  left.set_ylim(-0.02, 1.02)
  left.set_xlabel("training compute C (FLOPs)")
  left.set_ylabel("eval task accuracy")
  left.set_title("Task accuracy against compute")
  left.grid(True, which="both", alpha=0.3)
  left.legend(fontsize=7)
  right.set_xscale("log")
  right.set_yscale("log")
  right.set_xlabel("training compute C (FLOPs)")
  right.set_ylabel(LOSS_LABEL)
  return _finish(fig, right, path, "Loss against compute")


def plot_all(
  workdir: str, runs: Sequence, sizes: Sequence, frontier: Sequence, laws: dict[str, Any]
) -> list[str]:
  """Writes every plot the fits allow into `workdir`; returns the file names."""
  root = storage.path(workdir)
  names = [
    plot_params(root / "loss_vs_params.png", runs, sizes, laws),
    plot_compute(root / "loss_vs_compute.png", runs, frontier, laws),
  ]
  if "approach2" in laws:
    names.append(plot_isoflop(root / "isoflop.png", runs, laws))
  if any(r.accuracy_curve for r in runs):
    names.append(plot_accuracy(root / "accuracy_vs_compute.png", runs, frontier, laws))
  return names
