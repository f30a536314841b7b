"""LoRA (Hu et al. 2021): a trained low-rank update `(alpha / rank) A B` beside frozen kernels.

Adapters live under the params tree's `lora` key, mirroring the kernels they adapt:
`params["lora"][...module path...] = {"a": [..., fan_in, rank], "b": [..., rank, fan_out]}`,
where a kernel's fan-in axes are its leading ones (`[embed]` for the query, key and value
projections and the MLP's input; `[heads, head_dim]` for the attention output) and a scanned
stack's leading layer axis stays in front. A starts as PEFT's (Kaiming-uniform, bound
1 / sqrt(fan_in)) and B at zero, so a fresh adapter changes nothing.

The model always runs on `merge(params)`: each adapted kernel becomes `W + (alpha / rank) A B`
in float32 (a frozen bfloat16 `W` is widened first, so small updates are not rounded away). That
is the same function as LoRA's `x W + (alpha / rank) (x A) B`, for every family and for scanned
layers, at the cost of one `fan_in x rank x fan_out` product per adapted kernel per step.

LoRA dropout (`lora_dropout > 0`) drops the adapter's input, `x W + (alpha / rank)
(dropout(x) A) B`, which no merged kernel can express: the training step then runs on
`place(params)` (each adapted module holding `lora_a` and the scaled `lora_b` beside its kernel)
under `dropout(rate)`, a flax method interceptor that adds that term to the module's output,
with masks from the step's dropout rng. Evaluation and decoding run on the merged weights.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jtrans.finetune import Settings

KEY = "lora"  # The params tree's key that holds the adapters.


def _fan_in_axes(module_path: str) -> tuple[int, int]:
  """(leading layer axes, fan-in axes) of a kernel, from its module path."""
  lead = 1 if "/layers/" in f"/{module_path}/" else 0  # nn.scan's stacked blocks.
  return lead, 2 if module_path.rsplit("/", 1)[-1] == "out" else 1


def targets(params: Any, settings: Settings) -> dict[str, tuple[int, ...]]:
  """{module path: kernel shape} of the kernels `settings.lora_targets` matches."""
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY}, sep="/")
  found = {
    path[: -len("/kernel")]: tuple(x.shape)
    for path, x in flat.items()
    if path.endswith("/kernel") and re.search(settings.lora_targets, path[: -len("/kernel")])
  }
  if not found:
    kernels = sorted(p[: -len("/kernel")] for p in flat if p.endswith("/kernel"))
    raise ValueError(
      f"config.finetune.lora_targets={settings.lora_targets!r} matches no kernel; the model's "
      f"kernels are e.g. {kernels[:6]}."
    )
  return found


def init(params: Any, settings: Settings, rng: jax.Array) -> dict[str, Any]:
  """Fresh adapters (A Kaiming-uniform, B = 0) for the kernels `settings` targets."""
  adapters = {}
  for i, (path, shape) in enumerate(sorted(targets(params, settings).items())):
    lead, fan_in_axes = _fan_in_axes(path)
    fan_in = math.prod(shape[lead : lead + fan_in_axes])
    fan_out = math.prod(shape[lead + fan_in_axes :])
    bound = 1 / math.sqrt(fan_in)
    a_shape = (*shape[:lead], fan_in, settings.lora_rank)
    adapters[f"{path}/a"] = jax.random.uniform(
      jax.random.fold_in(rng, i), a_shape, jnp.float32, -bound, bound
    )
    adapters[f"{path}/b"] = jnp.zeros((*shape[:lead], settings.lora_rank, fan_out), jnp.float32)
  return traverse_util.unflatten_dict(adapters, sep="/")


def delta(a: jax.Array, b: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
  """`scale x A B` in float32, shaped as the kernel it adds to."""
  return (scale * jnp.einsum("...ir,...ro->...io", a, b)).reshape(shape)


def merge(params: Any, settings: Settings | None) -> Any:
  """The model's parameters: without the `lora` key, each adapted kernel `W + (alpha / rank) A B`
  in float32; `params` itself when it has no adapters."""
  if settings is None or KEY not in params:
    return params
  scale = settings.lora_alpha / settings.lora_rank
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY}, sep="/")
  adapters = traverse_util.flatten_dict(params[KEY], sep="/")
  for path in {p.rsplit("/", 1)[0] for p in adapters}:
    kernel = flat[f"{path}/kernel"]
    update = delta(adapters[f"{path}/a"], adapters[f"{path}/b"], kernel.shape, scale)
    flat[f"{path}/kernel"] = kernel.astype(jnp.float32) + update
  return traverse_util.unflatten_dict(flat, sep="/")


def flatten_paths(adapters: dict[str, Any]) -> list[str]:
  """The adapters' leaf paths ("decoder/block_0/attention/query/a", ...)."""
  return list(traverse_util.flatten_dict(adapters, sep="/"))


def place(params: Any, settings: Settings) -> Any:
  """The unmerged form that LoRA dropout trains: without the `lora` key, each adapted module
  holding `lora_a` `[..., fan_in, rank]` and `lora_b` `[..., rank, fan_out]` (times
  alpha / rank) beside its untouched kernel."""
  if KEY not in params:
    return params
  scale = settings.lora_alpha / settings.lora_rank
  flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != KEY}, sep="/")
  for path, x in traverse_util.flatten_dict(params[KEY], sep="/").items():
    module, leaf = path.rsplit("/", 1)
    flat[f"{module}/lora_{leaf}"] = x * scale if leaf == "b" else x
  return traverse_util.unflatten_dict(flat, sep="/")


def _add_dropped_update(rate: float):
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    y = next_fun(*args, **kwargs)
    if context.method_name != "__call__" or not module.has_variable("params", "lora_a"):
      return y
    a, b = (module.get_variable("params", n) for n in ("lora_a", "lora_b"))
    x = args[0]
    axes, size = 0, 1  # The trailing axes of x that the kernel's fan-in contracts.
    while size < a.shape[-2]:
      axes, size = axes + 1, size * x.shape[-axes - 1]
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    dropped = jnp.where(keep, x.astype(jnp.float32) / (1.0 - rate), 0.0)
    update = dropped.reshape(*x.shape[: x.ndim - axes], size) @ a @ b
    return y + update.reshape(y.shape).astype(y.dtype)

  return intercept


def dropout(rate: float) -> contextlib.AbstractContextManager:
  """Within it, every module holding `lora_a`/`lora_b` (`place`) adds
  `(dropout(x) lora_a) lora_b` to its output, its mask drawn from the "dropout" rng; a no-op
  for rate 0."""
  if not rate:
    return contextlib.nullcontext()
  return nn.intercept_methods(_add_dropped_update(rate))
