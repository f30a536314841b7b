"""Optimizer and learning-rate schedules from `config.optim`: Optax AdamW, clipping, masked decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jtrans import parametrization

SCHEDULES = ("cosine", "linear", "constant", "rsqrt")


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `cfg.lr` over `cfg.warmup_steps`, then:

  cosine: to `lr * cfg.final_lr_ratio` at `total_steps`; linear: likewise, in a straight line;
  constant: stays at lr; rsqrt: lr * sqrt(warmup / step), the schedule of Attention Is All You
  Need (with lr = d_model^-0.5 * warmup^-0.5 it is exactly the paper's).
  """
  lr, warmup = cfg.lr, cfg.warmup_steps
  end = lr * cfg.final_lr_ratio
  decay_steps = max(total_steps - warmup, 1)
  if cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.final_lr_ratio)
  elif cfg.schedule == "linear":
    after = optax.linear_schedule(lr, end, decay_steps)
  elif cfg.schedule == "constant":
    after = optax.constant_schedule(lr)
  elif cfg.schedule == "rsqrt":

    def after(count):
      return lr * jnp.sqrt(max(warmup, 1) / (count + max(warmup, 1)))
  else:
    raise ValueError(f"config.optim.schedule={cfg.schedule!r} is not one of {SCHEDULES}.")
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def weight_decay_mask(params: Any, decay_embeddings: bool) -> Any:
  """True for the leaves AdamW decays: weight matrices, and embeddings if asked.

  Biases and norm scales are never decayed. Decided by leaf name, which every module
  in jtrans follows: `kernel` (decayed), `embedding`, `bias`, `scale`.
  """

  def decide(path, leaf) -> bool:
    name = getattr(path[-1], "key", str(path[-1]))
    if name == "embedding":
      return decay_embeddings
    return name == "kernel"

  return jax.tree_util.tree_map_with_path(decide, params)


def make_optimizer(
  cfg: ml_collections.ConfigDict,
  total_steps: int,
  trainable: Callable[[Any], Any] | None = None,
  lr_multipliers: dict[tuple[str, ...], float] | None = None,
) -> optax.GradientTransformation:
  """clip_by_global_norm(cfg.grad_clip) -> adamw(schedule, masked weight decay) -> per-parameter
  learning-rate multipliers.

  `trainable(params)`: a tree of bools (fine-tuning's frozen leaves are False); those leaves get
  no update and no optimizer state, and clipping measures the trained leaves alone.
  `lr_multipliers`: {parameter path: multiplier} (muP's, from `parametrization.lr_multipliers`).
  """
  schedule = make_schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(
    optax.adamw(
      schedule,
      b1=cfg.b1,
      b2=cfg.b2,
      eps=cfg.eps,
      weight_decay=cfg.weight_decay,
      mask=lambda params: weight_decay_mask(params, cfg.decay_embeddings),
    )
  )
  if lr_multipliers:
    parts.append(parametrization.scale_by_multipliers(lr_multipliers))
  tx = optax.chain(*parts)
  if trainable is None:
    return tx
  labels = lambda params: jax.tree.map(  # noqa: E731
    lambda t: "trained" if t else "frozen", trainable(params)
  )
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
