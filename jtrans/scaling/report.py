"""`run.py --mode=analyze`: a finished sweep's runs -> scaling-law fits, scaling.json, a Markdown
report and PNG plots, all written into the sweep's directory.

Each run directory (`DIR/<point>/`) holds config.json and metrics.jsonl; a run counts once
its eval record at the last step (`train.steps`) exists. N (non-embedding parameters), D
(tokens) and C (FLOPs) come from the config through `planner.plan_config`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from jtrans import storage
from jtrans.scaling import fits, planner, plots


@dataclasses.dataclass
class Run:
  """One finished (or unfinished: `loss` None) training run of a sweep."""

  name: str
  params: int  # Non-embedding N.
  tokens: int  # D.
  flops: float  # C = FLOPs per token x D.
  flops_per_token: float
  lr: float
  loss: float | None  # Eval loss (nats/token) at the last step.
  curve: list[tuple[float, float]]  # (C so far, eval loss) at every evaluation.
  # Task accuracy (eval `accuracy`: the answer tokens' for a prompt_response task) at the last
  # step and (C so far, accuracy) at every evaluation; None / [] when the runs record none.
  accuracy: float | None = None
  accuracy_curve: list[tuple[float, float]] = dataclasses.field(default_factory=list)


def collect(workdir: str) -> list[Run]:
  """The runs under `workdir` (each subdirectory with config.json and metrics.jsonl)."""
  runs = []
  for path in sorted(storage.path(workdir).iterdir(), key=lambda p: p.name):
    name = path.name
    if not ((path / "config.json").is_file() and (path / "metrics.jsonl").is_file()):
      continue
    config = json.loads((path / "config.json").read_text())
    plan = planner.plan_config(config, name)
    evals: dict[int, float] = {}
    accuracies: dict[int, float] = {}
    for line in (path / "metrics.jsonl").read_text().splitlines():
      record = json.loads(line) if line.strip() else {}
      if record.get("split") == "eval" and "nll" in record:
        evals[record["step"]] = record["nll"]  # A resumed run may repeat a step: keep the last.
        if "accuracy" in record:
          accuracies[record["step"]] = record["accuracy"]
    flops_per_step = plan.flops_per_token * plan.batch_size * plan.seq_len
    curve = [(flops_per_step * step, nll) for step, nll in sorted(evals.items())]
    runs.append(
      Run(
        name=name,
        params=plan.params,
        tokens=plan.tokens,
        flops=plan.flops,
        flops_per_token=plan.flops_per_token,
        lr=plan.lr,
        loss=evals.get(plan.steps),
        curve=curve,
        accuracy=accuracies.get(plan.steps),
        accuracy_curve=[(flops_per_step * step, a) for step, a in sorted(accuracies.items())],
      )
    )
  return runs


def best_per_size(runs: list[Run]) -> list[Run]:
  """The lowest-loss run of each N (a ladder has one; an lr x size sweep keeps the best lr)."""
  best: dict[int, Run] = {}
  for r in runs:
    if r.params not in best or r.loss < best[r.params].loss:
      best[r.params] = r
  return [best[n] for n in sorted(best)]


def ladder(runs: list[Run]) -> dict[str, Any]:
  """The finished runs' best of each N, smallest first, and whether each beats every smaller
  N's best (`rungs_in_order`: what a model-size ladder must show before L(N) means anything)."""
  best = best_per_size([r for r in runs if r.loss is not None])
  losses = [r.loss for r in best]
  return {
    "best_per_size": [r.name for r in best],
    "rungs_in_order": all(bigger < smaller for smaller, bigger in zip(losses, losses[1:])),
    "smallest_loss": losses[0] if losses else None,
    "largest_loss": losses[-1] if losses else None,
  }


def compute_frontier(runs: list[Run]) -> list[Run]:
  """The lower envelope of loss against C: the best run of each budget (runs within 10% of
  one C), kept when it beats every cheaper budget's best."""
  flops = [r.flops for r in runs]
  best = [
    min((runs[i] for i in group), key=lambda r: r.loss) for group in fits.group_budgets(flops)
  ]
  frontier, lowest = [], np.inf
  for r in best:  # group_budgets orders the budgets by C.
    if r.loss < lowest:
      frontier.append(r)
      lowest = r.loss
  return frontier


def _law_dict(law: Any, ci: fits.Bootstrap) -> dict[str, Any]:
  return {**dataclasses.asdict(law), "ci95": ci.intervals, "resamples": [ci.succeeded, ci.samples]}


def fit_all(runs: list[Run], bootstrap_samples: int = 200) -> tuple[dict[str, Any], list[str]]:
  """Every fit the runs support, with bootstrap intervals; and notes on the fits skipped."""
  laws, notes = {}, []
  sizes = best_per_size(runs)
  if len(runs) < 8:
    notes.append(
      f"Only {len(runs)} runs: a bootstrap resample of so few points often keeps 3 "
      "distinct ones, which a 3-constant law fits exactly, so the intervals are wide."
    )
  if len({r.params for r in sizes}) >= 3:
    n, loss = np.array([r.params for r in sizes], float), np.array([r.loss for r in sizes])
    law = fits.fit_power_law(n, loss)
    ci = fits.bootstrap(lambda i: _power_law_values(n[i], loss[i]), len(n), bootstrap_samples)
    laws["loss_vs_params"] = _law_dict(law, ci)
  else:
    notes.append("L(N) needs at least 3 model sizes.")
  frontier = compute_frontier(runs)
  if len(frontier) >= 3:
    c, loss = np.array([r.flops for r in frontier]), np.array([r.loss for r in frontier])
    law = fits.fit_power_law(c, loss)
    ci = fits.bootstrap(lambda i: _power_law_values(c[i], loss[i]), len(c), bootstrap_samples)
    laws["loss_vs_compute"] = _law_dict(law, ci)
  else:
    notes.append("L(C) needs at least 3 runs on the compute frontier.")
  n, d = np.array([r.params for r in runs], float), np.array([r.tokens for r in runs], float)
  c, loss = np.array([r.flops for r in runs]), np.array([r.loss for r in runs])
  iso = fits.fit_isoflop(n, d, c, loss)
  if iso is not None:
    ci = fits.bootstrap(
      lambda i: _isoflop_values(n[i], d[i], c[i], loss[i]), len(n), bootstrap_samples
    )
    laws["approach2"] = _law_dict(iso, ci)
  else:
    notes.append("Approach 2 (IsoFLOP) needs 2 budgets with 3 or more sizes each.")
  if (
    len(runs) >= 6
    and np.std(np.log(d) - np.polyval(np.polyfit(np.log(n), np.log(d), 1), np.log(n))) > 0.1
  ):
    law = fits.fit_chinchilla(n, d, loss)
    ci = fits.bootstrap(
      lambda i: _chinchilla_values(n[i], d[i], loss[i]), len(n), max(bootstrap_samples // 4, 2)
    )
    laws["approach3"] = _law_dict(law, ci)
  else:
    notes.append(
      "Approach 3 needs 6 or more runs whose D varies apart from N (a ladder fixes D "
      "or ties it to N, so A/N^alpha and B/D^beta cannot be told apart)."
    )
  return laws, notes


def _power_law_values(x: np.ndarray, loss: np.ndarray) -> dict[str, float]:
  if len(np.unique(x)) < 3:
    raise ValueError("a resample with fewer than 3 distinct points")
  law = fits.fit_power_law(x, loss, starts=3)
  return {"E": law.E, "A": law.A, "alpha": law.alpha}


def _isoflop_values(n, d, c, loss) -> dict[str, float]:
  iso = fits.fit_isoflop(n, d, c, loss)
  return {} if iso is None else {"a": iso.a, "b": iso.b}


def _chinchilla_values(n, d, loss) -> dict[str, float]:
  law = fits.fit_chinchilla(n, d, loss, starts=4)
  return {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta}


def _with_ci(fit: dict[str, Any], key: str) -> str:
  low_high = fit["ci95"].get(key)
  text = f"{fit[key]:.4g}"
  return text + (f" [{low_high[0]:.3g}, {low_high[1]:.3g}]" if low_high else "")


def markdown(runs: list[Run], laws: dict[str, Any], notes: list[str]) -> str:
  """The report: runs, then each fit's constants with 95% bootstrap intervals."""
  lines = [
    "# Scaling-law fits",
    "",
    "Loss: eval nats per token at the last step. N: non-embedding "
    "parameters. D: training tokens. C: training FLOPs (6 x matmul parameters + attention).",
    "",
    "| run | N | D | D/N | C FLOPs | lr | loss | accuracy |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in runs:
    loss = "unfinished" if r.loss is None else f"{r.loss:.4f}"
    accuracy = "" if r.accuracy is None else f"{r.accuracy:.3f}"
    lines.append(
      f"| {r.name} | {r.params:,} | {r.tokens:.3g} | {r.tokens / r.params:.3g} | "
      f"{r.flops:.3g} | {r.lr:.3g} | {loss} | {accuracy} |"
    )
  lines += ["", "| fit | law | constants (95% bootstrap interval) | R^2 |", "|---|---|---|---:|"]
  for key, law in (
    ("loss_vs_params", "L(N) = E + A N^-alpha"),
    ("loss_vs_compute", "L(C) = E + A C^-alpha"),
  ):
    if key in laws:
      f = laws[key]
      lines.append(
        f"| {key} | {law} | E={_with_ci(f, 'E')}, A={_with_ci(f, 'A')}, "
        f"alpha={_with_ci(f, 'alpha')} | {f['r2']:.4f} |"
      )
  if "approach3" in laws:
    f = laws["approach3"]
    lines.append(
      f"| approach 3 | L = E + A/N^alpha + B/D^beta | E={_with_ci(f, 'E')}, "
      f"A={_with_ci(f, 'A')}, B={_with_ci(f, 'B')}, alpha={_with_ci(f, 'alpha')}, "
      f"beta={_with_ci(f, 'beta')} | {f['r2']:.4f} |"
    )
  if "approach2" in laws:
    f = laws["approach2"]
    lines.append(
      f"| approach 2 | N_opt = k C^a, D_opt = k' C^b | a={_with_ci(f, 'a')}, "
      f"b={_with_ci(f, 'b')}, k={f['n_coef']:.3g}, k'={f['d_coef']:.3g} | |"
    )
  resampled = [
    f"{key}: {ok} of {total} bootstrap resamples gave a fit"
    + ("" if ok >= 0.9 * total else "; fewer than 90%, so no interval is given")
    for key, (ok, total) in ((k, f["resamples"]) for k, f in laws.items())
  ]
  lines += [""] + [f"- {note}" for note in notes + resampled]
  return "\n".join(lines) + "\n"


def analyze(workdir: str, bootstrap_samples: int = 200) -> str:
  """Fits the finished runs under `workdir`; writes scaling.json, scaling.md and the plots."""
  runs = collect(workdir)
  finished = [r for r in runs if r.loss is not None]
  if len(finished) < 3:
    raise ValueError(
      f"{workdir}: {len(finished)} finished runs (of {len(runs)}); the fits need 3. "
      "Finish the sweep first (relaunch the same --sweep command)."
    )
  broken = [f"{r.name} ({r.loss})" for r in finished if not np.isfinite(r.loss)]
  if broken:
    raise ValueError(
      f"{workdir}: the final eval loss of run(s) {', '.join(broken)} is not "
      "finite; rerun them (relaunch the sweep with a lower optim.lr for those "
      "points) or move their directories out of the sweep before fitting."
    )
  laws, notes = fit_all(finished, bootstrap_samples)
  if len(finished) < len(runs):
    notes.append(f"{len(runs) - len(finished)} unfinished run(s) left out.")
  figures = plots.plot_all(
    workdir, finished, best_per_size(finished), compute_frontier(finished), laws
  )
  report = markdown(runs, laws, notes) + "\nPlots: " + ", ".join(figures) + "\n"
  root = storage.path(workdir)
  storage.write_text(
    root / "scaling.json",
    json.dumps(
      {
        "runs": [dataclasses.asdict(r) for r in runs],
        "fits": laws,
        "ladder": ladder(finished),
        "notes": notes,
        "plots": figures,
      },
      indent=2,
    ),
  )
  storage.write_text(root / "scaling.md", report)
  return report
