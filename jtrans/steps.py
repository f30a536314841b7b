"""The pure train and eval steps, and the two engines that compile them (jit over a mesh, pmap).

A batch is a dict of arrays: `targets` and `weights` plus the objective's inputs (see
`objectives.py`: LM rows, masked-LM rows, source/target pairs, images).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jtrans import finetune as finetuning
from jtrans import losses, objectives, optim, sharding
from jtrans.finetune import lora

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Optimizer steps taken (int32 scalar).
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What the steps read of a config (`from_config`): the objective and its loss options,
  accumulation, the NaN policy, the seeds and the mesh's logical-axis rules."""

  objective: str
  masking: objectives.Masking | None = None  # mlm: how inputs are corrupted.
  noising: objectives.Noising | None = None  # diffusion: how images are noised.
  label_smoothing: float = 0.0
  z_loss: float = 0.0
  chunk_length: int = 0  # Positions per chunk of the chunked loss; 0: all logits at once.
  grad_accum_steps: int = 1
  skip_nonfinite: bool = False  # config.train.nan_policy == "skip".
  draws_randomness: bool = False  # Dropout or masking: per-row keys (`_row_loss_sums`).
  seed: int = 0
  rules: tuple = ()  # Logical axis -> mesh axes (config.mesh.rules).
  # config.loss.output_words as token ids: the only classes the loss and accuracy score (the
  # other logits are set to -1e9, as if the output layer had just these rows); () = all.
  output_ids: tuple[int, ...] = ()
  # config.finetune when it freezes leaves or adds LoRA adapters; None: every leaf trains.
  finetune: finetuning.Settings | None = None
  contrastive: str = "softmax"  # config.loss.contrastive: CLIP's or SigLIP's loss.
  # contrastive: the zero-shot prompts evaluation scores (config.data.class_names); None: none.
  zero_shot: objectives.ZeroShot | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> StepSettings:
    tuning = finetuning.Settings.from_config(config)
    return cls(
      objective=config.loss.objective,
      masking=objectives.Masking.from_config(config),
      noising=objectives.Noising.from_config(config),
      label_smoothing=config.loss.label_smoothing,
      z_loss=config.loss.z_loss,
      chunk_length=config.loss.get("chunk_length", 0),
      grad_accum_steps=config.train.grad_accum_steps,
      skip_nonfinite=config.train.nan_policy == "skip",
      # Per-row keys vmap the loss over rows: not for a contrastive loss, which pairs them.
      draws_randomness=(
        config.model.dropout_rate > 0
        or config.finetune.lora_dropout > 0
        or config.loss.objective in ("mlm", "diffusion")
      )
      and config.loss.objective != "contrastive",
      seed=config.seed,
      rules=sharding.rules(config.mesh),
      finetune=tuning if tuning.freezes else None,
      contrastive=config.loss.get("contrastive", "softmax"),
    )


def _rules(settings: StepSettings, mesh: Mesh | None, rows_vmapped: bool) -> tuple:
  """The logical-axis rules the activations follow (none under pmap, which has no mesh).
  `rows_vmapped`: called per row under a vmap that shards the rows over the batch mesh axes
  itself, so the activations' constraints leave those axes out."""
  if mesh is None:
    return ()
  if not rows_vmapped:
    return settings.rules

  def without_batch_axes(axes):
    kept = tuple(
      a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a not in sharding.BATCH_AXES
    )
    return kept or None

  return tuple((name, without_batch_axes(axes)) for name, axes in settings.rules)


def loss_sums(
  model: nn.Module,
  params: Any,
  batch: Batch,
  settings: StepSettings,
  mesh: Mesh | None,
  *,
  deterministic: bool,
  rngs: dict | None = None,
  rows_vmapped: bool = False,
) -> Metrics:
  """The loss sums of `batch` (already prepared): cross-entropy, CLIP's contrastive loss (with
  zero-shot accuracy when evaluating) or the diffusion noise MSE; training (not
  `deterministic`) adds label smoothing and the z-loss. With `settings.chunk_length`, token
  objectives compute the logits a chunk of positions at a time
  (`losses.chunked_cross_entropy`)."""
  options = {}
  if not deterministic:
    options = {"label_smoothing": settings.label_smoothing, "z_loss": settings.z_loss}
  targets, weights = batch["targets"], batch["weights"]
  with nn.logical_axis_rules(_rules(settings, mesh, rows_vmapped)):
    apply = functools.partial(
      objectives.logits, model, params, batch, settings.objective, deterministic, rngs
    )
    if settings.objective == "diffusion":
      with jax.named_scope("loss"):
        return losses.noise_mse(apply(), batch["noise"], weights)
    if settings.objective == "contrastive":
      image_embeds, *rest = apply()
      with jax.named_scope("loss"):
        sums = losses.contrastive(image_embeds, *rest, weights, kind=settings.contrastive)
        if deterministic and settings.zero_shot is not None:
          correct = objectives.zero_shot_correct(
            model, params, image_embeds, settings.zero_shot, targets
          )
          sums["zero_shot_accuracy"] = jnp.sum(correct * weights)
      return sums
    if settings.chunk_length and settings.objective in objectives.TOKENS:
      return losses.chunked_cross_entropy(
        apply(hidden=True),
        functools.partial(objectives.project, model, params),
        targets,
        weights,
        chunk_length=settings.chunk_length,
        **options,
      )
    logits = apply()
    if settings.output_ids:
      allowed = jnp.zeros(logits.shape[-1], bool).at[jnp.array(settings.output_ids)].set(True)
      logits = jnp.where(allowed, logits, jnp.asarray(-1e9, logits.dtype))
    with jax.named_scope("loss"):  # Names the loss's ops in profiles.
      if "mixed_targets" in batch:  # Mixup (config.data.mixup): training batches only.
        mixed = batch["mixed_targets"], batch["mix"]
        return losses.mixup_cross_entropy(logits, targets, *mixed, weights, **options)
      return losses.cross_entropy(logits, targets, weights, **options)


def _loss_sums(
  params: Any,
  batch: Batch,
  key: jax.Array,
  *,
  model: nn.Module,
  settings: StepSettings,
  mesh: Mesh | None,
  rows_vmapped: bool = False,
) -> Metrics:
  """Loss and metric sums of `batch` with its dropout and masking drawn from `key`."""
  dropout_key, mask_key = jax.random.split(key)
  batch = objectives.prepare(batch, mask_key, settings.masking, settings.noising)
  return loss_sums(
    model,
    params,
    batch,
    settings,
    mesh,
    deterministic=False,
    rngs={"dropout": dropout_key},
    rows_vmapped=rows_vmapped,
  )


def _row_loss_sums(
  params: Any,
  batch: Batch,
  rng: jax.Array,
  row_ids: jax.Array,
  *,
  model: nn.Module,
  settings: StepSettings,
  mesh: Mesh | None,
) -> Metrics:
  """`_loss_sums` with each row's randomness drawn from `fold_in(rng, global row index)`.

  So the masks of a row do not depend on which device, process, engine or micro-batch holds
  it: jit, pmap, any mesh and gradient accumulation draw the same dropout and masks. The rows
  are vmapped (sharded over the batch axes, as the batch is).
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(row_ids)
  rows = jax.tree.map(lambda x: x[:, None], batch)  # [batch, 1, ...]: one-row batches.
  one_row = functools.partial(
    _loss_sums, model=model, settings=settings, mesh=mesh, rows_vmapped=True
  )
  sums = jax.vmap(
    one_row, in_axes=(None, 0, 0), spmd_axis_name=sharding.BATCH_AXES if mesh is not None else None
  )(params, rows, keys)
  return jax.tree.map(lambda x: x.sum(0), sums)


def gradients(
  params: Any,
  batch: Batch,
  rng: jax.Array,
  *,
  model: nn.Module,
  settings: StepSettings,
  mesh: Mesh | None,
  row_offset: jax.Array | int = 0,
) -> tuple[Any, Metrics]:
  """Gradient of the summed (not averaged) loss, and the metric sums, over `batch`.

  `row_offset` is the global index of the batch's first row (pmap: this device's share).
  With `settings.grad_accum_steps = k`, the batch is split into k micro-batches (rows
  strided, so each keeps its share of every device) and their sums are added in a scan:
  the result equals the one-batch result, at 1/k of the activation memory.
  """
  per_row = settings.draws_randomness
  if per_row:
    rows = next(iter(batch.values())).shape[0]
    batch = {**batch, "row_ids": row_offset + jnp.arange(rows, dtype=jnp.int32)}
  # Fine-tuning differentiates the trained leaves alone (the frozen ones' gradients are None,
  # never computed); the model sees the LoRA-merged weights (or, with LoRA dropout, the
  # adapters beside their kernels: lora.place).
  tuning = settings.finetune
  trained, frozen = finetuning.split(params, tuning) if tuning else (params, None)

  def micro_step(micro: Batch, key: jax.Array) -> tuple[Any, Metrics]:
    def loss_sum(p):
      if tuning:
        p = finetuning.model_params(finetuning.combine(p, frozen), tuning, model, training=True)
      with lora.dropout(tuning.lora_dropout if tuning else 0.0):
        if per_row:  # Keys come from the step's rng and the row ids, not from `key`.
          rest = {k: v for k, v in micro.items() if k != "row_ids"}
          sums = _row_loss_sums(
            p, rest, rng, micro["row_ids"], model=model, settings=settings, mesh=mesh
          )
        else:
          sums = _loss_sums(p, micro, key, model=model, settings=settings, mesh=mesh)
      return sums["loss"], sums

    (_, sums), grads = jax.value_and_grad(loss_sum, has_aux=True)(trained)
    return grads, sums

  k = settings.grad_accum_steps
  if k == 1:
    return micro_step(batch, rng)

  def split(x):
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    if mesh is not None:
      spec = PartitionSpec(None, sharding.BATCH_AXES)
      x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return x

  micro_batches = jax.tree.map(split, batch)

  def accumulate(carry, xs):
    micro, i = xs
    grads, sums = micro_step(micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  zeros = jax.tree.map(
    jnp.zeros_like, jax.eval_shape(micro_step, jax.tree.map(lambda x: x[0], micro_batches), rng)
  )
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(k)))
  return grads, sums


def apply_gradients(
  state: TrainState,
  grad_sum: Any,
  sums: Metrics,
  *,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  skip_nonfinite: bool = False,
) -> tuple[TrainState, Metrics]:
  """Averages the summed gradient over the batch's weight and takes one optimizer step.

  `metrics["finite"]` is 1.0 when the loss, the gradient and the update are all finite. With
  `skip_nonfinite` (config.train.nan_policy="skip") a step where they are not keeps the
  parameters and optimizer state as they were; the step counter still advances, with the data.
  """
  with jax.named_scope("optimizer"):  # Names the update's ops in profiles.
    denominator = jnp.maximum(sums["denominator"], 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grad_sum)
    grads = finetuning.fill_frozen(grads, state.params)  # Zeros where `gradients` froze.
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  metrics = losses.normalize(sums)
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics["learning_rate"] = schedule(state.step)
  finite = (
    jnp.isfinite(metrics["loss"])
    & jnp.isfinite(metrics["grad_norm"])
    & jnp.isfinite(optax.global_norm(updates))
  )
  metrics["finite"] = finite.astype(jnp.float32)
  if skip_nonfinite:
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def dropout_rng(settings: StepSettings, step: jax.Array) -> jax.Array:
  """A key for `step` alone, so any step can be replayed."""
  return jax.random.fold_in(jax.random.key(settings.seed + 1), step)


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  settings: StepSettings,
  mesh: Mesh | None,
) -> tuple[TrainState, Metrics]:
  """One optimizer step on the global batch (the jit engine's step)."""
  grads, sums = gradients(
    state.params,
    batch,
    dropout_rng(settings, state.step),
    model=model,
    settings=settings,
    mesh=mesh,
  )
  return apply_gradients(
    state, grads, sums, tx=tx, schedule=schedule, skip_nonfinite=settings.skip_nonfinite
  )


def eval_step(
  params: Any, batch: Batch, *, model: nn.Module, settings: StepSettings, mesh: Mesh | None
) -> Metrics:
  """Weighted metric sums (not means) of one eval batch, so batches can be added.

  Masked-LM evaluation masks (and diffusion evaluation noises) with a fixed key, so that every
  evaluation scores the same task.
  """
  batch = objectives.prepare(
    batch, jax.random.key(settings.seed + 2), settings.masking, settings.noising
  )
  params = finetuning.model_params(params, settings.finetune, model)
  return loss_sums(model, params, batch, settings, mesh, deterministic=True)


class Engine(NamedTuple):
  """How a run places its state and batches and runs its steps: `jit` or `pmap`."""

  train_step: Callable[[Any, Any], tuple[Any, Metrics]]  # (placed state, batch) -> ...
  eval_step: Callable[[Any, Any], Metrics]  # (placed state, batch) -> metric sums
  place_state: Callable[[TrainState], Any]  # Global state -> the engine's layout.
  global_state: Callable[[Any], TrainState]  # The engine's layout -> global (checkpoints).
  place_batch: Callable[[dict[str, np.ndarray]], Any]  # The global host batch -> device batch.
  context: Callable[[], contextlib.AbstractContextManager]  # What the steps must run inside.


def jit_engine(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  state_shardings: TrainState,
  output_ids: tuple[int, ...] = (),
  zero_shot: objectives.ZeroShot | None = None,
) -> Engine:
  """Steps compiled once by jit with the state's shardings; the state is donated."""
  schedule = optim.make_schedule(config.optim, config.train.steps)
  settings = dataclasses.replace(
    StepSettings.from_config(config), output_ids=output_ids, zero_shot=zero_shot
  )
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  train_fn = jax.jit(
    functools.partial(
      train_step, model=model, tx=tx, schedule=schedule, settings=settings, mesh=mesh
    ),
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  )
  eval_fn = jax.jit(
    functools.partial(eval_step, model=model, settings=settings, mesh=mesh),
    in_shardings=(state_shardings.params, batch_sharding),
    out_shardings=replicated,
  )
  return Engine(
    train_step=train_fn,
    eval_step=lambda state, batch: eval_fn(state.params, batch),
    place_state=lambda state: state,
    global_state=lambda state: state,
    place_batch=lambda local: sharding.global_batch(local, mesh),
    context=lambda: jax.set_mesh(mesh),
  )


def pmap_engine(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  state_shardings: TrainState,
  output_ids: tuple[int, ...] = (),
) -> Engine:
  """Pure data parallelism with `jax.pmap`: the state replicated on every local device, each
  device a slice of the rows, gradient and metric sums added with `psum`."""
  if mesh.shape["fsdp"] != 1 or mesh.shape["tensor"] != 1:
    raise ValueError(
      "config.train.engine='pmap' is pure data parallelism; set config.mesh.fsdp "
      "and config.mesh.tensor to 1, or use engine='jit'."
    )
  schedule = optim.make_schedule(config.optim, config.train.steps)
  settings = dataclasses.replace(StepSettings.from_config(config), output_ids=output_ids)
  devices = jax.local_devices()

  def step(state, batch):
    # Each device holds rows [i * b, (i + 1) * b) of the global batch: their randomness is
    # that of those global rows (see `_row_loss_sums`), as under jit.
    offset = jax.lax.axis_index("batch") * next(iter(batch.values())).shape[0]
    grads, sums = gradients(
      state.params,
      batch,
      dropout_rng(settings, state.step),
      model=model,
      settings=settings,
      mesh=None,
      row_offset=offset,
    )
    grads, sums = jax.lax.psum((grads, sums), "batch")
    return apply_gradients(
      state, grads, sums, tx=tx, schedule=schedule, skip_nonfinite=settings.skip_nonfinite
    )

  def evaluate(state, batch):
    return jax.lax.psum(
      eval_step(state.params, batch, model=model, settings=settings, mesh=None), "batch"
    )

  train_fn = jax.pmap(step, axis_name="batch", donate_argnums=0)
  eval_fn = jax.pmap(evaluate, axis_name="batch")

  def place_batch(batch):
    """The global batch -> this process's rows, one slice per local device (process p's
    devices hold the p-th block of rows, as `axis_index` numbers them)."""
    n, p, count = len(devices), jax.process_index(), jax.process_count()

    def local(v):
      rows = v.shape[0] // count
      return v[p * rows : (p + 1) * rows].reshape(n, rows // n, *v.shape[1:])

    return {k: local(v) for k, v in batch.items()}

  def global_state(state):
    first = jax.tree.map(lambda x: x[0], state)
    return jax.device_put(first, state_shardings)

  return Engine(
    train_step=lambda state, batch: _first_metrics(*train_fn(state, batch)),
    eval_step=lambda state, batch: jax.tree.map(lambda x: x[0], eval_fn(state, batch)),
    place_state=lambda state: _replicate(state, devices),
    global_state=global_state,
    place_batch=place_batch,
    context=contextlib.nullcontext,
  )  # pmap names its own axis; a global mesh would clash.


def _replicate(tree: Any, devices: list[jax.Device]) -> Any:
  """A copy of every leaf on each device, stacked on a leading axis: pmap's layout."""
  stacked = NamedSharding(Mesh(np.array(devices), ("devices",)), PartitionSpec("devices"))
  return jax.tree.map(
    lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices), *x.shape)), stacked), tree
  )


def _first_metrics(state: Any, metrics: Metrics) -> tuple[Any, Metrics]:
  """pmap returns per-device copies of the (identical) metrics; keep one."""
  return state, jax.tree.map(lambda x: x[0], metrics)


def make_engine(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  state_shardings: TrainState,
  output_ids: tuple[int, ...] = (),
  zero_shot: objectives.ZeroShot | None = None,
) -> Engine:
  """`output_ids`, `zero_shot`: StepSettings' (parts.build makes them with the tokenizer)."""
  if config.train.engine == "jit":
    return jit_engine(model, tx, config, mesh, state_shardings, output_ids, zero_shot)
  if config.train.engine == "pmap":
    return pmap_engine(model, tx, config, mesh, state_shardings, output_ids)
  raise ValueError(f"config.train.engine={config.train.engine!r} is not 'jit' or 'pmap'.")
