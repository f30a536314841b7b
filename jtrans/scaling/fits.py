"""Scaling-law fits of a finished sweep: L(N), L(C), Chinchilla approaches 2 and 3, bootstrap.

Units: N = non-embedding parameters, D = training tokens, C = training FLOPs
(`flops.train_flops_per_token` x D), L = eval loss in nats per token.

* `fit_power_law`: L(x) = E + A x^-alpha, for x = N (a ladder) or x = C (the compute frontier).
* `fit_chinchilla` (approach 3, Hoffmann et al. 2022 eq. 2 and appendix D.2; Besiroglu et al.
  2024): L(N, D) = E + A / N^alpha + B / D^beta, with the Huber loss (delta 1e-3) of
  log L_pred - log L on log-space parameters (a = log A, b = log B, e = log E, so
  log L_pred = logsumexp(a - alpha log N, b - beta log D, e)), minimised by L-BFGS.
* `fit_isoflop` (approach 2): per compute budget, a parabola of L in log N (and in log D);
  their minima give N_opt(C) = k C^a and D_opt(C) = k' C^b.

Every fit starts from a grid of initialisations: the objective is evaluated at all of them and
L-BFGS runs from the best few (the objective has several local minima: starts from
Hoffmann et al.'s grid end at different ones). Confidence intervals are percentiles of refits
on bootstrap resamples of the points.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.optimize
import threadpoolctl

HUBER_DELTA = 1e-3  # Chinchilla's delta, on log-loss residuals.


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
  """Huber loss of residuals `r` and its derivative, elementwise."""
  small = np.abs(r) <= delta
  value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
  return value, np.where(small, r, delta * np.sign(r))


def _logsumexp(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """log sum exp over axis -2 of `[..., terms, points]`, and the softmax weights (its gradient)."""
  top = terms.max(axis=-2, keepdims=True)
  exp = np.exp(terms - top)
  total = exp.sum(axis=-2, keepdims=True)
  return (top + np.log(total))[..., 0, :], exp / total


def _minimise(
  objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
  grid_values: np.ndarray,
  inits: np.ndarray,
  starts: int,
  exponents: int,
) -> np.ndarray:
  """L-BFGS (analytic gradient) from the `starts` inits `[n, params]` of least `grid_values`;
  the last `exponents` parameters are kept >= 0 (a loss that grows with N or D is no law).

  Tolerances are tight: with delta = 1e-3 the Huber objective is tiny and flat, and scipy's
  defaults can stop early (Besiroglu et al. 2024 suggest this as a cause of Chinchilla's misfit).
  """
  best_x, best_value = inits[np.nanargmin(grid_values)], np.inf
  # One BLAS thread: on these 3-5 parameter problems OpenBLAS's threads only spin, and made
  # each L-BFGS iteration 40x slower on a busy 2-core machine.
  bounds = [(None, None)] * (inits.shape[1] - exponents) + [(0.0, None)] * exponents
  with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
    for x0 in inits[np.argsort(np.nan_to_num(grid_values, nan=np.inf))[:starts]]:
      result = scipy.optimize.minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
      )
      if np.isfinite(result.fun) and result.fun < best_value:
        best_x, best_value = result.x, result.fun
  return best_x


def _huber_objective(logl: np.ndarray, features: np.ndarray, delta: float):
  """Objective and gradient of sum Huber(logsumexp_k(c_k - s_k f_k) - log L) / delta.

  A parameter vector is (c_1..c_K, s_1..s_K'): term k is c_k - s_k f_k for the K' terms with a
  feature `features[k]` `[points]` (log N, log D) and the constant c_K for the last (log E).
  Also returns a vectorised value function for `[inits, params]` grids.
  """
  k = features.shape[0]

  def terms(p):
    c, s = p[..., : k + 1], p[..., k + 1 :]
    slopes = s[..., :, None] * features  # [..., k, points]
    varying = c[..., :k, None] - slopes
    const = np.broadcast_to(c[..., k:, None], varying.shape[:-2] + (1, features.shape[1]))
    return np.concatenate([varying, const], axis=-2)

  def objective(p):
    pred, weights = _logsumexp(terms(p))
    value, dr = huber(pred - logl, delta)
    grad_c = (dr * weights).sum(-1)
    grad_s = -(dr * weights[:k] * features).sum(-1)
    return float(value.sum() / delta), np.concatenate([grad_c, grad_s]) / delta

  def grid_values(inits):
    pred, _ = _logsumexp(terms(inits))
    return huber(pred - logl, delta)[0].sum(-1) / delta

  return objective, grid_values


def _r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
  residual = np.sum((observed - predicted) ** 2)
  total = np.sum((observed - observed.mean()) ** 2)
  return float(1.0 - residual / total) if total > 0 else float("nan")


# ---------------------------------------------------------------- L(x) = E + A x^-alpha


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(x) = E + A x^-alpha, with R^2 on the losses."""

  E: float
  A: float
  alpha: float
  r2: float

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return self.E + self.A * np.asarray(x, np.float64) ** -self.alpha


def _check_points(inputs: np.ndarray, constants: int, law: str) -> None:
  """Fewer distinct points than constants leave the law undetermined (any R^2 it reports, 1
  included, says nothing): refuse."""
  distinct = len({tuple(row) for row in np.asarray(inputs, np.float64).tolist()})
  if distinct < constants:
    raise ValueError(
      f"{law} has {constants} constants but the data have only {distinct} "
      f"distinct points; a fit needs at least {constants}: add runs to the sweep."
    )


def fit_power_law(
  x: Sequence[float], loss: Sequence[float], starts: int = 8, delta: float = HUBER_DELTA
) -> PowerLaw:
  """Fits E + A x^-alpha with the Huber loss on log residuals in (e, a, alpha) log space."""
  _check_points(np.asarray(x)[:, None], 3, "E + A x^-alpha")
  # x in units of its geometric mean: a = log A stays O(1) whether x is 1e4 parameters or
  # 1e20 FLOPs, so one grid of starting points serves both; A is converted back below.
  logx, logl = np.log(np.asarray(x, np.float64)), np.log(np.asarray(loss, np.float64))
  shift = logx.mean()
  objective, grid_values = _huber_objective(logl, (logx - shift)[None], delta)
  lo = np.log(np.min(loss))
  # Parameters (a, e, alpha): log L = logsumexp(a - alpha log x, e).
  inits = np.array(
    list(
      itertools.product(
        [lo - 3.0, lo - 1.0, lo - 0.3, lo], [lo - 2.0, lo - 0.5, lo - 0.1], [0.05, 0.2, 0.5, 1.0]
      )
    )
  )
  a, e, alpha = _minimise(objective, grid_values(inits), inits, starts, exponents=1)
  a += alpha * shift
  law = PowerLaw(E=float(np.exp(e)), A=float(np.exp(a)), alpha=float(alpha), r2=0.0)
  return dataclasses.replace(law, r2=_r_squared(np.asarray(loss, np.float64), law(x)))


# ---------------------------------------------------------------- approach 3


@dataclasses.dataclass(frozen=True)
class Chinchilla:
  """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2)."""

  E: float
  A: float
  B: float
  alpha: float
  beta: float
  r2: float

  def __call__(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
    return self.E + self.A * n**-self.alpha + self.B * d**-self.beta

  def optimal_params(self, flops: np.ndarray, flops_per_param_token: float = 6.0) -> np.ndarray:
    """N_opt(C) = G (C / 6)^(beta / (alpha + beta)), G = (alpha A / (beta B))^(1 / (alpha + beta)).

    Hoffmann et al. eq. 4, with C = 6 N D.
    """
    g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
    return g * (np.asarray(flops, np.float64) / flops_per_param_token) ** (
      self.beta / (self.alpha + self.beta)
    )

  def frontier(self, flops: np.ndarray, flops_per_param_token: float = 6.0) -> np.ndarray:
    """The least loss that C FLOPs buy: L(N_opt, C / (6 N_opt))."""
    n = self.optimal_params(flops, flops_per_param_token)
    return self(n, np.asarray(flops, np.float64) / (flops_per_param_token * n))


def chinchilla_inits() -> np.ndarray:
  """Hoffmann et al.'s grid of (a, b, e, alpha, beta) starting points (appendix D.2)."""
  return np.array(
    list(
      itertools.product(
        np.arange(0.0, 30.0, 5.0),
        np.arange(0.0, 30.0, 5.0),
        np.arange(-1.0, 1.5, 0.5),
        np.arange(0.0, 2.5, 0.5),
        np.arange(0.0, 2.5, 0.5),
      )
    )
  )


def fit_chinchilla(
  n: Sequence[float],
  d: Sequence[float],
  loss: Sequence[float],
  starts: int = 16,
  delta: float = HUBER_DELTA,
) -> Chinchilla:
  """Approach 3: Huber loss on log residuals over (a, b, e, alpha, beta), L-BFGS."""
  _check_points(np.stack([np.asarray(n), np.asarray(d)], 1), 5, "approach 3")
  logn, logd = np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64))
  logl = np.log(np.asarray(loss, np.float64))
  objective, grid_values = _huber_objective(logl, np.stack([logn, logd]), delta)
  inits = chinchilla_inits()
  a, b, e, alpha, beta = _minimise(objective, grid_values(inits), inits, starts, exponents=2)
  law = Chinchilla(
    E=float(np.exp(e)),
    A=float(np.exp(a)),
    B=float(np.exp(b)),
    alpha=float(alpha),
    beta=float(beta),
    r2=0.0,
  )
  return dataclasses.replace(law, r2=_r_squared(np.exp(logl), law(n, d)))


# ---------------------------------------------------------------- approach 2


@dataclasses.dataclass(frozen=True)
class IsoFlop:
  """Approach 2: per budget C_i, the parabola minima N_opt_i, D_opt_i, and the power laws
  N_opt = n_coef C^a and D_opt = d_coef C^b fitted to them (least squares in log-log)."""

  budgets: list[float]
  n_opt: list[float]
  d_opt: list[float]
  a: float
  n_coef: float
  b: float
  d_coef: float


def parabola_minimum(x: np.ndarray, loss: np.ndarray) -> float:
  """The x (in log space) at the minimum of L = p0 log(x)^2 + p1 log(x) + p2; NaN if concave."""
  p = np.polyfit(np.log(x), loss, 2)
  return float(np.exp(-p[1] / (2 * p[0]))) if p[0] > 0 else float("nan")


def group_budgets(flops: Sequence[float], tolerance: float = 0.1) -> list[list[int]]:
  """Indices grouped by compute budget: sorted C values within `tolerance` (relative) of the
  group's first join it (whole steps make nominally equal budgets differ a little)."""
  order = np.argsort(flops)
  groups: list[list[int]] = []
  for i in order:
    if groups and flops[i] <= flops[groups[-1][0]] * (1 + tolerance):
      groups[-1].append(int(i))
    else:
      groups.append([int(i)])
  return groups


def fit_isoflop(
  n: Sequence[float],
  d: Sequence[float],
  flops: Sequence[float],
  loss: Sequence[float],
  min_points: int = 3,
) -> IsoFlop | None:
  """Approach 2 over the budgets with at least `min_points` runs; None with fewer than 2."""
  n, d, flops, loss = (np.asarray(v, np.float64) for v in (n, d, flops, loss))
  budgets, n_opt, d_opt = [], [], []
  for group in group_budgets(flops):
    if len(group) < min_points:
      continue
    g = np.array(group)
    n_min, d_min = parabola_minimum(n[g], loss[g]), parabola_minimum(d[g], loss[g])
    if np.isfinite(n_min) and np.isfinite(d_min):
      budgets.append(float(np.exp(np.mean(np.log(flops[g])))))
      n_opt.append(n_min)
      d_opt.append(d_min)
  if len(budgets) < 2:
    return None
  a, log_n = np.polyfit(np.log(budgets), np.log(n_opt), 1)
  b, log_d = np.polyfit(np.log(budgets), np.log(d_opt), 1)
  return IsoFlop(
    budgets, n_opt, d_opt, float(a), float(np.exp(log_n)), float(b), float(np.exp(log_d))
  )


# ---------------------------------------------------------------- bootstrap


class Bootstrap(NamedTuple):
  """Percentile intervals, and how many of the resamples gave a fit."""

  intervals: dict[str, tuple[float, float]]
  succeeded: int
  samples: int


def bootstrap(
  fit: Callable[[np.ndarray], dict[str, float]],
  num_points: int,
  samples: int = 100,
  seed: int = 0,
  level: float = 0.95,
  min_success: float = 0.9,
) -> Bootstrap:
  """Percentile intervals of each value `fit(indices)` returns, over resamples of the points.

  `fit` takes indices (with repeats) into the data and returns named values; a resample whose
  fit raises or returns non-finite values counts as failed. A value gets no interval unless
  at least `min_success` of the resamples gave it: percentiles of the survivors alone would
  be biased towards the resamples that happen to be easy to fit.
  """
  rng = np.random.default_rng(seed)
  draws: dict[str, list[float]] = {}
  succeeded = 0
  for _ in range(samples):
    try:
      values = fit(rng.integers(0, num_points, num_points))
    except (ValueError, np.linalg.LinAlgError, TypeError):
      continue
    values = values or {}
    succeeded += bool(values) and all(np.isfinite(v) for v in values.values())
    for key, value in values.items():
      if np.isfinite(value):
        draws.setdefault(key, []).append(value)
  tail = 100 * (1 - level) / 2
  intervals = {
    k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
    for k, v in draws.items()
    if len(v) >= max(2, min_success * samples)
  }
  return Bootstrap(intervals, succeeded, samples)
