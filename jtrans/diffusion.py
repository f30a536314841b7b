"""Gaussian diffusion as pure functions: noise schedules, the forward (noising) process, and the
DDPM and DDIM samplers with classifier-free guidance, run as one compiled loop.

Notation (Ho et al. 2020): beta_t the noise added at step t (t = 0 .. T-1), alpha_t = 1 - beta_t,
abar_t = prod_{s <= t} alpha_s; x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. A model
predicts eps from (x_t, t, class). Images are `[batch, height, width, channels]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """beta_t for t = 0 .. T-1 (float64, as a tuple so that a step can close over it)."""

  betas: tuple[float, ...]

  @property
  def steps(self) -> int:
    return len(self.betas)

  def alphas_cumprod(self) -> np.ndarray:
    """abar_t `[T]` float64."""
    return np.cumprod(1.0 - np.asarray(self.betas, np.float64))

  def table(self, name: str) -> jax.Array:
    """A per-step float32 `[T]` table computed in float64 (1 - abar_t near t = 0 loses its
    digits when taken in float32): "sqrt_abar", "sqrt_one_minus_abar", and the posterior
    q(x_{t-1} | x_t, x_0)'s "coef_x0", "coef_xt" and "variance" (`posterior`)."""
    betas = np.asarray(self.betas, np.float64)
    abar = self.alphas_cumprod()
    abar_prev = np.append(1.0, abar[:-1])
    tables = {
      "sqrt_abar": np.sqrt(abar),
      "sqrt_one_minus_abar": np.sqrt(1 - abar),
      "coef_x0": betas * np.sqrt(abar_prev) / (1 - abar),
      "coef_xt": (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar),
      "variance": betas * (1 - abar_prev) / (1 - abar),
    }
    return jnp.asarray(tables[name], jnp.float32)


def make_schedule(kind: str, steps: int = 1000) -> Schedule:
  """ "linear": beta from 1e-4 to 0.02 scaled by 1000 / steps (Ho et al.; DiT's); "cosine":
  abar(t) = cos((t / T + 0.008) / 1.008 x pi / 2)^2 with betas capped at 0.999 (Nichol &
  Dhariwal 2021)."""
  if kind not in SCHEDULES or steps < 2:
    raise ValueError(
      f"config.loss.noise_schedule={kind!r} with diffusion_steps={steps}: use one of "
      f"{SCHEDULES} and at least 2 steps."
    )
  if kind == "linear":
    scale = 1000 / steps
    return Schedule(tuple(np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)))
  t = np.arange(steps + 1, dtype=np.float64) / steps
  abar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
  return Schedule(tuple(np.minimum(1 - abar[1:] / abar[:-1], 0.999)))


def add_noise(x0: jax.Array, timesteps: jax.Array, noise: jax.Array, schedule: Schedule):
  """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, per row's timestep (int `[batch]`)."""
  shape = (-1, *([1] * (x0.ndim - 1)))
  signal = schedule.table("sqrt_abar")[timesteps].reshape(shape)
  return signal * x0 + schedule.table("sqrt_one_minus_abar")[timesteps].reshape(shape) * noise


def posterior(
  schedule: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of q(x_{t-1} | x_t, x_0) (t a scalar step >= 1; at t = 0 the mean is x_0
  and the variance 0): mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x_0 + (1 - abar_{t-1})
  sqrt(alpha_t) / (1 - abar_t) x_t, variance = beta_t (1 - abar_{t-1}) / (1 - abar_t)."""
  mean = schedule.table("coef_x0")[t] * x0 + schedule.table("coef_xt")[t] * xt
  return mean, schedule.table("variance")[t]


def guided(
  predict: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
  labels: jax.Array,
  null_label: int,
  guidance: float,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """(x_t, t) -> eps with classifier-free guidance (Ho & Salimans 2022): eps(null) + guidance x
  (eps(labels) - eps(null)), both in one doubled batch; guidance 1 is the conditional model
  alone (one batch)."""

  def eps(x: jax.Array, t: jax.Array) -> jax.Array:
    steps = jnp.full(x.shape[:1], t, jnp.int32)
    if guidance == 1.0:
      return predict(x, steps, labels)
    both = predict(
      jnp.concatenate([x, x]),
      jnp.concatenate([steps, steps]),
      jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )
    conditional, unconditional = jnp.split(both, 2)
    return unconditional + guidance * (conditional - unconditional)

  return eps


def estimate_x0(
  eps: Callable[[jax.Array, jax.Array], jax.Array],
  x: jax.Array,
  t: jax.Array,
  schedule: Schedule,
  clip: float = 1.0,
) -> jax.Array:
  """x_0 = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t), clipped to [-clip, clip]
  (0: not clipped)."""
  noise_scale = schedule.table("sqrt_one_minus_abar")[t]
  x0 = (x - noise_scale * eps(x, t)) / schedule.table("sqrt_abar")[t]
  return jnp.clip(x0, -clip, clip) if clip else x0


def ddpm_mean_variance(
  eps: Callable[[jax.Array, jax.Array], jax.Array],
  x: jax.Array,
  t: jax.Array,
  schedule: Schedule,
  clip: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """One ancestral step's distribution p(x_{t-1} | x_t): the posterior q(x_{t-1} | x_t, x_0)
  at the model's x_0 estimate. With the exact noise predictor of the data (and no clipping)
  its mean is E[x_{t-1} | x_t]."""
  return posterior(schedule, estimate_x0(eps, x, t, schedule, clip), x, t)


def sample(
  eps: Callable[[jax.Array, jax.Array], jax.Array],
  shape: tuple[int, ...],
  rng: jax.Array,
  schedule: Schedule,
  *,
  sampler: str = "ddpm",
  steps: int = 0,
  clip: float = 1.0,
) -> jax.Array:
  """Images of `shape` drawn from N(0, I) at t = T-1 down to t = 0, in a `lax.scan`.

  eps: (x_t `[batch, ...]`, t int scalar) -> predicted noise (`guided`).
  sampler: "ddpm": ancestral sampling, x_{t-1} ~ N(posterior mean of (x_0 estimate, x_t),
    posterior variance), every step of the schedule; "ddim": the deterministic DDIM update
    (Song et al. 2021, eta 0) over `steps` evenly spaced timesteps (0: all).
  clip: the x_0 estimate is clipped to [-clip, clip] (images in [-1, 1]); 0: not clipped.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"config.sample.sampler={sampler!r} is not one of {SAMPLERS}.")
  noise_key, step_key = jax.random.split(rng)
  x = jax.random.normal(noise_key, shape, jnp.float32)
  if sampler == "ddpm":

    def ddpm_step(x, t):
      mean, variance = ddpm_mean_variance(eps, x, t, schedule, clip)
      z = jax.random.normal(jax.random.fold_in(step_key, t), x.shape, jnp.float32)
      return mean + jnp.sqrt(variance) * z, None

    x, _ = jax.lax.scan(ddpm_step, x, jnp.arange(schedule.steps - 1, -1, -1))
    return x
  count = steps or schedule.steps
  times = np.round(np.linspace(schedule.steps - 1, 0, count)).astype(np.int32)
  previous = np.append(times[1:], -1).astype(np.int32)

  signal, noise = schedule.table("sqrt_abar"), schedule.table("sqrt_one_minus_abar")

  def ddim_step(x, ts):
    t, t_prev = ts
    x0 = estimate_x0(eps, x, t, schedule, clip)
    e = (x - signal[t] * x0) / noise[t]  # The noise consistent with a clipped x_0.
    last = t_prev < 0  # Then x_0 itself.
    prev = jnp.maximum(t_prev, 0)
    return jnp.where(last, x0, signal[prev] * x0 + noise[prev] * e), None

  x, _ = jax.lax.scan(ddim_step, x, (jnp.asarray(times), jnp.asarray(previous)))
  return x


def generate(
  model,
  params,
  labels: jax.Array,
  rng: jax.Array,
  schedule: Schedule,
  image_shape: tuple[int, int, int],
  *,
  null_label: int,
  guidance: float = 1.0,
  sampler: str = "ddpm",
  steps: int = 0,
) -> jax.Array:
  """Images `[len(labels), *image_shape]` (the model's pixel scale) of the classes `labels`
  from a DiT (`model`, `params`), compiled as one program."""

  @jax.jit
  def run(params, labels, rng):
    predict = lambda x, t, y: model.apply({"params": params}, x, t, y)  # noqa: E731
    eps = guided(predict, labels, null_label, guidance)
    return sample(eps, (labels.shape[0], *image_shape), rng, schedule, sampler=sampler, steps=steps)

  return run(params, labels, rng)


def grid(images: np.ndarray, rows: int, scale: int = 4, gap: int = 1) -> np.ndarray:
  """uint8 `[count, h, w, c]` images (count = rows x columns, row-major) -> one uint8 picture
  `[rows (h scale + gap) + gap, columns (w scale + gap) + gap, c]`, each image enlarged
  `scale` times (nearest) on a white background."""
  count, h, w, c = images.shape
  columns = count // rows
  big = images.repeat(scale, axis=1).repeat(scale, axis=2)
  cell_h, cell_w = h * scale + gap, w * scale + gap
  out = np.full((rows * cell_h + gap, columns * cell_w + gap, c), 255, np.uint8)
  for i, image in enumerate(big):
    r, col = divmod(i, columns)
    out[gap + r * cell_h : gap + r * cell_h + h * scale, gap + col * cell_w :][:, : w * scale] = (
      image
    )
  return out
