"""Compares a finished run with its experiment's expected numbers; exits 1 when one misses.

  python -m jtrans.experiments.check nanogpt_shakespeare_char runs/shakespeare
  python -m jtrans.experiments.check experiments/grokking runs/grok --variant=ci

`experiments/<name>/expected.json` maps each variant of the recipe (the argument of its
config.py: "cpu", "ci", ...) to a list of checks:

  {"cpu": [{"split": "eval", "metric": "nll", "step": 2000, "value": 1.88, "tolerance": 0.01,
            "bound": "upper"}]}

`bound` is "upper" (the run's number must be at most value + tolerance: a loss), "lower" (at
least value - tolerance: an accuracy) or "both" (within tolerance either way). `step` is the
record's step in the run's metrics.jsonl, or "last" for the run's last record of that split.
The variant defaults to the one named in the workdir's `config.json` (written by the
recipe's runs through `config.experiment`; a sweep's: its first point's), else "cpu".

A sweep's workdir, once `run.py --mode=analyze` has written its scaling.json, is checked on
split "fit" (step "last"): `<law>.<constant>` of every fit (`loss_vs_params.alpha`,
`approach3.r2`, ...) and of their 95% intervals (`approach3.alpha_low`, `_high`), `rungs_in_order` (1 when each model size's best loss is below every
smaller size's, else 0) and `largest_loss` / `smallest_loss` (the best final eval loss of the
largest and of the smallest size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import NamedTuple

from jtrans import storage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")
BOUNDS = ("upper", "lower", "both")


class Outcome(NamedTuple):
  check: dict
  got: float | None  # None: the run has no such record.
  passed: bool


def experiment_dir(name: str) -> str:
  """`name` as a directory, or as one under the repository's experiments/."""
  path = name if os.path.isdir(name) else os.path.join(EXPERIMENTS, name)
  if not os.path.isfile(os.path.join(path, "expected.json")):
    known = sorted(
      d
      for d in os.listdir(EXPERIMENTS)
      if os.path.isfile(os.path.join(EXPERIMENTS, d, "expected.json"))
    )
    raise ValueError(f"experiment {name!r}: no expected.json there; known experiments: {known}.")
  return path


def load_expected(path: str, variant: str) -> list[dict]:
  with open(os.path.join(path, "expected.json")) as f:
    expected = json.load(f)
  if variant not in expected:
    raise ValueError(
      f"{path}/expected.json has no variant {variant!r} (it has {sorted(expected)}); "
      "pass --variant=<one of them>."
    )
  for check in expected[variant]:
    missing = {"split", "metric", "step", "value", "tolerance", "bound"} - set(check)
    if missing or check["bound"] not in BOUNDS:
      raise ValueError(
        f"{path}/expected.json: a {variant!r} check {check} needs keys {sorted(missing)} and bound in {BOUNDS}."
      )
  return expected[variant]


def read_metrics(workdir: str) -> list[dict]:
  """The run's metrics.jsonl records, or a sweep's one "fit" record from its scaling.json."""
  root = storage.path(workdir)  # A gs:// workdir too.
  if (root / "scaling.json").is_file():
    return [fit_record(json.loads((root / "scaling.json").read_text()))]
  if not (root / "metrics.jsonl").is_file():
    raise ValueError(
      f"{workdir}: no metrics.jsonl (a run) or scaling.json (a sweep after "
      "`run.py --mode=analyze`); is it the --workdir of a finished run?"
    )
  return [
    json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines() if line.strip()
  ]


def fit_record(scaling: dict) -> dict:
  """scaling.json (jtrans.scaling.report) -> the metrics a sweep's expectations name."""
  record = {"split": "fit", "step": 0}
  for law, fit in scaling["fits"].items():
    record.update({f"{law}.{k}": v for k, v in fit.items() if isinstance(v, (int, float))})
    for k, (low, high) in fit.get("ci95", {}).items():
      record.update({f"{law}.{k}_low": low, f"{law}.{k}_high": high})
  if "ladder" not in scaling:
    raise ValueError(
      "scaling.json has no 'ladder' (written by an older jtrans); rerun "
      "`run.py --mode=analyze --workdir=<the sweep>` to rewrite it."
    )
  ladder = scaling["ladder"]
  record.update(rungs_in_order=float(ladder["rungs_in_order"]))
  record.update({k: ladder[k] for k in ("smallest_loss", "largest_loss") if ladder[k] is not None})
  return record


def run_variant(workdir: str) -> str | None:
  """The recipe variant the run was launched with (config.json's `experiment.variant`; a
  sweep's workdir: that of its first point with a config.json)."""
  root = storage.path(workdir)
  paths = [root / "config.json"] + (sorted(root.glob("*/config.json")) if root.is_dir() else [])
  for path in paths:
    if path.is_file():
      return json.loads(path.read_text()).get("experiment", {}).get("variant") or None
  return None


def judge(check: dict, records: list[dict]) -> Outcome:
  rows = [r for r in records if r.get("split") == check["split"] and check["metric"] in r]
  if check["step"] != "last":
    rows = [r for r in rows if r["step"] == check["step"]]
  if not rows:
    return Outcome(check, None, False)
  got = float(rows[-1][check["metric"]])
  value, tolerance = check["value"], check["tolerance"]
  passed = (
    math.isfinite(got)
    and {
      "upper": got <= value + tolerance,
      "lower": got >= value - tolerance,
      "both": abs(got - value) <= tolerance,
    }[check["bound"]]
  )
  return Outcome(check, got, passed)


def bound_text(check: dict) -> str:
  """`<= 1.89 (1.88 + 0.01)`, `>= 0.97 (0.98 - 0.01)` or `2.5 ± 0.2`."""
  value, tolerance = check["value"], check["tolerance"]
  if check["bound"] == "both":
    return f"{value:g} ± {tolerance:g}"
  if check["bound"] == "upper":
    return f"<= {value + tolerance:.6g} ({value:g} + {tolerance:g})"
  return f">= {value - tolerance:.6g} ({value:g} - {tolerance:g})"


def table(outcomes: list[Outcome]) -> str:
  lines = ["| split | metric | step | expected | run | |", "|---|---|---:|---|---:|---|"]
  for o in outcomes:
    c = o.check
    got = "missing" if o.got is None else f"{o.got:.4f}"
    lines.append(
      f"| {c['split']} | {c['metric']} | {c['step']} | {bound_text(c)} | {got} "
      f"| {'ok' if o.passed else 'FAIL'} |"
    )
  return "\n".join(lines)


def check(experiment: str, workdir: str, variant: str | None = None) -> tuple[bool, str]:
  """(every check passed, the table) for the run in `workdir`."""
  path = experiment_dir(experiment)
  variant = variant or run_variant(workdir) or "cpu"
  outcomes = [judge(c, read_metrics(workdir)) for c in load_expected(path, variant)]
  header = f"{os.path.basename(os.path.normpath(path))} ({variant}) against {workdir}:"
  return all(o.passed for o in outcomes), header + "\n" + table(outcomes)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("experiment", help="a name under experiments/, or its directory")
  parser.add_argument("workdir", help="the finished run's --workdir")
  parser.add_argument("--variant", default=None, help="the recipe variant (default: the run's)")
  args = parser.parse_args(argv)
  try:
    passed, text = check(args.experiment, args.workdir, args.variant)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  print("all expected numbers hold" if passed else "some expected numbers do not hold")
  return 0 if passed else 1


if __name__ == "__main__":
  sys.exit(main())
