"""Scaling-law fits recover known laws; `analyze` turns a sweep directory into fits and plots."""

import json
import os

import numpy as np
import pytest

from configs import base, ladder
from jtrans.scaling import fits as scaling
from jtrans.scaling import report as scaling_report
from jtrans.scaling import sweep

# Hoffmann et al. (2022), eq. 10: the published approach-3 fit.
CHINCHILLA = scaling.Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, r2=1.0)


def noisy(loss, seed, scale=0.01):
  """1% multiplicative noise."""
  return loss * np.exp(scale * np.random.default_rng(seed).standard_normal(np.shape(loss)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_approach3_recovers_chinchillas_constants_from_noisy_losses(seed):
  n, d = np.meshgrid(np.logspace(6, 11, 8), np.logspace(7, 13, 8))
  n, d = n.ravel(), d.ravel()
  fit = scaling.fit_chinchilla(n, d, noisy(CHINCHILLA(n, d), seed))
  assert fit.alpha == pytest.approx(0.34, rel=0.05)
  assert fit.beta == pytest.approx(0.28, rel=0.05)
  assert fit.E == pytest.approx(1.69, rel=0.03)
  assert fit.r2 > 0.99
  # The implied compute-optimal allocation follows: N_opt ~ C^(beta / (alpha + beta)).
  ratio = fit.optimal_params(1e22) / fit.optimal_params(1e20)
  assert np.log(ratio) / np.log(100) == pytest.approx(0.28 / 0.62, rel=0.05)


def test_power_law_fit_and_bootstrap_interval():
  n = np.logspace(4, 8, 9)
  loss = noisy(1.2 + 30.0 * n**-0.3, seed=3)
  law = scaling.fit_power_law(n, loss)
  assert law.alpha == pytest.approx(0.3, rel=0.05) and law.E == pytest.approx(1.2, rel=0.03)
  assert law.r2 > 0.99
  ci = scaling.bootstrap(
    lambda i: {"alpha": scaling.fit_power_law(n[i], loss[i], starts=2).alpha}, len(n), samples=30
  )
  assert ci.succeeded == ci.samples == 30
  assert ci.intervals["alpha"][0] < law.alpha < ci.intervals["alpha"][1]


def test_fits_refuse_fewer_points_than_constants_and_bootstrap_reports_failures():
  n, d = np.array([1e6, 1e7, 1e8]), np.array([1e9, 3e9, 2e9])
  with pytest.raises(ValueError, match="approach 3 has 5 constants but the data have only 3"):
    scaling.fit_chinchilla(n, d, 1.5 + 10 * n**-0.3)
  with pytest.raises(ValueError, match="3 constants but the data have only 2"):
    scaling.fit_power_law(n[[0, 1, 1]], np.array([3.0, 2.0, 2.0]))
  # A fit that fails on 1 resample in 5 gives counts but no interval (80% < 90%).
  calls = iter(range(100))
  flaky = lambda i: {"x": 1.0} if next(calls) % 5 else {"x": float("nan")}
  result = scaling.bootstrap(flaky, 4, samples=50)
  assert (result.succeeded, result.samples, result.intervals) == (40, 50, {})


def test_huber_objective_gradient_matches_finite_differences():
  rng = np.random.default_rng(0)
  features = np.log(rng.uniform(1e6, 1e9, (2, 20)))
  logl = rng.uniform(0.5, 1.5, 20)
  objective, grid_values = scaling._huber_objective(logl, features, delta=0.05)
  p = np.array([5.0, 6.0, 0.3, 0.35, 0.3])
  value, grad = objective(p)
  eps = 1e-6
  numeric = [(objective(p + eps * e)[0] - objective(p - eps * e)[0]) / (2 * eps) for e in np.eye(5)]
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
  assert grid_values(p[None])[0] == pytest.approx(value)


def test_isoflop_parabola_minimum():
  n = np.geomspace(1e6, 1e9, 7)
  assert scaling.parabola_minimum(n, (np.log(n) - np.log(3e7)) ** 2 + 2.0) == pytest.approx(3e7)
  assert np.isnan(scaling.parabola_minimum(n, -(np.log(n) ** 2)))
  assert scaling.group_budgets([1e18, 1.05e18, 1e19, 0.98e19, 1e20]) == [[0, 1], [3, 2], [4]]


def write_run(directory, overrides, loss, mid_loss):
  """A finished run as training leaves it: config.json and metrics.jsonl with evaluations."""
  config = sweep.apply(base.get_config(), overrides)
  os.makedirs(directory)
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  steps = config.train.steps
  with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
    for step, value in ((steps // 2, mid_loss), (steps, loss)):
      f.write(json.dumps({"step": step, "split": "eval", "nll": value, "accuracy": 0.5}) + "\n")
    f.write(json.dumps({"step": steps, "split": "train", "loss": loss}) + "\n")


def test_analyze_an_isoflop_sweep_writes_fits_report_and_plots(tmp_path):
  """Losses from Chinchilla's law on ladder rungs at three budgets: approach 2 finds
  N_opt ~ C^a with a near beta / (alpha + beta) = 0.45, and every file is written."""
  rungs = ["12M", "21M", "50M", "170M", "403M", "1.4B", "3.2B"]
  budgets = [1e18, 1e19, 1e20]
  k = 0
  for budget in budgets:
    for name in rungs:
      keys = ladder.overrides(name, budget=budget)
      r = ladder.rung(name)
      tokens = keys["train.steps"] * keys["train.batch_size"] * r.seq_len
      loss = noisy(CHINCHILLA(r.non_embedding_params, tokens), seed=k, scale=0.003)
      write_run(str(tmp_path / f"{k:03d}"), keys, float(loss), float(loss) + 0.3)
      k += 1
  os.makedirs(tmp_path / "not_a_run")
  report = scaling_report.analyze(str(tmp_path), bootstrap_samples=8)
  result = json.load(open(tmp_path / "scaling.json"))
  assert len(result["runs"]) == len(rungs) * len(budgets)
  iso = result["fits"]["approach2"]
  assert iso["a"] == pytest.approx(0.28 / 0.62, abs=0.08)
  assert iso["a"] + iso["b"] == pytest.approx(1.0, abs=0.1)  # C ~ N D.
  assert result["fits"]["approach3"]["alpha"] == pytest.approx(0.34, rel=0.15)
  assert "approach 2" in report and "approach 3" in report
  for name in ("scaling.md", "loss_vs_params.png", "loss_vs_compute.png", "isoflop.png"):
    assert os.path.getsize(tmp_path / name) > 1000, name


def test_analyze_a_ladder_fits_loss_against_size_and_skips_approach3(tmp_path):
  for k, name in enumerate(["13k", "100k", "336k", "793k", "1.5M"]):
    keys = ladder.overrides(name, tokens_per_param=2)
    n = ladder.rung(name).non_embedding_params
    loss = noisy(1.2 + 30.0 * n**-0.3, seed=k, scale=0.005)
    write_run(str(tmp_path / name), keys, float(loss), float(loss) + 0.5)
  unfinished = dict(ladder.overrides("2.7M", tokens_per_param=2))
  write_run(str(tmp_path / "unfinished"), unfinished, 1.0, 1.1)
  with open(tmp_path / "unfinished" / "config.json") as f:  # Its last eval is not at the end.
    config = json.load(f)
  config["train"]["steps"] *= 3
  with open(tmp_path / "unfinished" / "config.json", "w") as f:
    json.dump(config, f)
  report = scaling_report.analyze(str(tmp_path), bootstrap_samples=8)
  fits = json.load(open(tmp_path / "scaling.json"))["fits"]
  assert fits["loss_vs_params"]["alpha"] == pytest.approx(0.3, rel=0.1)
  assert fits["loss_vs_params"]["r2"] > 0.95 and "loss_vs_compute" in fits
  assert "approach3" not in fits and "Approach 3 needs" in report
  assert "unfinished" in report and not os.path.exists(tmp_path / "isoflop.png")
  # The runs' task accuracy: a column of the report and its plot against compute beside L(C).
  assert "| loss | accuracy |" in report and "| 0.500 |" in report
  assert os.path.getsize(tmp_path / "accuracy_vs_compute.png") > 1000
  runs = json.load(open(tmp_path / "scaling.json"))["runs"]
  assert all(r["accuracy_curve"] for r in runs if r["loss"] is not None)


def test_analyze_needs_finished_runs(tmp_path):
  with pytest.raises(ValueError, match="finished runs"):
    scaling_report.analyze(str(tmp_path))


def test_analyze_names_a_run_whose_loss_is_nan(tmp_path):
  for name in ["13k", "100k", "336k", "793k"]:
    n = ladder.rung(name).non_embedding_params
    loss = float("nan") if name == "336k" else 1.2 + 30.0 * n**-0.3
    write_run(str(tmp_path / name), ladder.overrides(name, tokens_per_param=2), loss, 3.0)
  with pytest.raises(ValueError, match=r"run\(s\) 336k \(nan\) is not finite"):
    scaling_report.analyze(str(tmp_path), bootstrap_samples=4)


def test_plan_counts_the_positions_the_model_processes():
  """--mode=plan's tokens are what --mode=compile counts: a ViT-S/16 at 224 sees 197 positions
  (196 patches and the class token), not data.seq_len; seq2seq both sides; an LM seq_len."""
  from configs import lm, t5, vit
  from jtrans.scaling import planner

  v = vit.get_config("s")
  plan = planner.plan_config(v)
  assert (plan.seq_len, v.data.seq_len) == (197, 128)
  assert plan.tokens == v.train.steps * v.train.batch_size * 197
  assert "at seq_len 197" in planner.format_config(v) and "4096 x 197" in planner.format_config(v)
  s = t5.get_config("tiny")
  assert planner.plan_config(s).seq_len == (s.data.source_len or s.data.seq_len) + s.data.seq_len
  assert planner.plan_config(lm.get_config("tiny")).seq_len == 64
  # A sweep's stored config (JSON) plans the same as the ConfigDict.
  assert planner.plan_config(json.loads(v.to_json())) == plan
