"""The one training loop: the sharded train state, and `train(config, workdir)`."""
from __future__ import annotations

import contextlib
import json
import signal
import time
from typing import Any, Callable, Iterable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jtrans import (checkpoint, decoding, flops, losses, objectives, optim, pretrained, sharding,
                    steps)
from jtrans.steps import Engine, Metrics, TrainState
from jtrans.data import images, pipeline, seq2seq, sources, tokenizers
from jtrans.metrics import MetricsWriter, progress_line
from jtrans.models import ModelConfig, build_model, example_inputs

# ---------------------------------------------------------------- state and its shardings


def state_layout(model: nn.Module, tx: optax.GradientTransformation,
                 config: ml_collections.ConfigDict, mesh: Mesh) -> tuple[Callable, TrainState, Any]:
  """(init function of an rng, the state's shardings, its abstract shapes carrying them).

  Shapes come from `eval_shape`, shardings from the parameters' logical axis names; the
  optimizer state is sharded like the parameters it mirrors.
  """
  axis_rules = sharding.rules(config.mesh)
  example = example_inputs(ModelConfig.from_config(config.model), config.data.seq_len,
                           config.data.source_len)

  def init(rng):
    params = nn.meta.unbox(model.init(rng, *example)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  rng = jax.random.key(config.seed)
  boxed_params = jax.eval_shape(lambda r: model.init(r, *example)["params"], rng)
  param_shardings = sharding.logical_shardings(boxed_params, mesh, axis_rules)
  shapes = jax.eval_shape(init, rng)
  replicated = sharding.replicated(mesh)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, shapes.opt_state, param_shardings,
      transform_non_params=lambda _: replicated)
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          shapes, shardings)
  return init, shardings, abstract


class Layout(NamedTuple):
  """What a run builds from its config before any state exists (built once, handed on)."""
  mesh: Mesh
  model_cfg: ModelConfig
  model: nn.Module
  tx: optax.GradientTransformation
  init: Callable  # rng -> TrainState
  shardings: TrainState
  abstract: Any  # ShapeDtypeStructs with the shardings: the target of checkpoint restores.


def build_layout(config: ml_collections.ConfigDict, mesh: Mesh | None = None,
                 data: bool = True) -> Layout:
  """The validated mesh (default: `config.mesh` over this host's devices), model, optimizer
  and state layout of `config`. `data=False` skips the checks of config.data against the data
  set and tokenizer, for what reads no data (an ahead-of-time compile, generation, export)."""
  mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
  model_cfg = validate(config, mesh)
  if data:
    validate_data(config)
  model = build_model(model_cfg)
  tx = optim.make_optimizer(config.optim, config.train.steps)
  return Layout(mesh, model_cfg, model, tx, *state_layout(model, tx, config, mesh))


def init_state(model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               mesh: Mesh) -> tuple[TrainState, TrainState, Any]:
  """The train state built directly sharded (`jit(init, out_shardings=...)`): nothing is ever
  whole on one host. Returns (state, shardings, abstract state for checkpoint restores)."""
  init, shardings, abstract = state_layout(model, tx, config, mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  return state, shardings, abstract


# ---------------------------------------------------------------- the loop


def validate(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelConfig:
  """Checks that need more than one key; each failure names the setting and the fix."""
  model_cfg = ModelConfig.from_config(config.model)
  objectives.check(config)
  if config.data.seq_len > config.model.max_len:
    raise ValueError(f"config.data.seq_len={config.data.seq_len} exceeds config.model.max_len="
                     f"{config.model.max_len}; raise max_len or shorten seq_len.")
  sharding.check_batch_size(config.train.batch_size, mesh)
  k = config.train.grad_accum_steps
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if k < 1 or config.train.batch_size % (k * shards):
    raise ValueError(f"config.train.grad_accum_steps={k} must split config.train.batch_size="
                     f"{config.train.batch_size} into micro-batches that the {shards} batch shards "
                     f"divide; use a batch size that is a multiple of {k * shards}.")
  if config.train.nan_policy not in ("stop", "skip"):
    raise ValueError(f"config.train.nan_policy={config.train.nan_policy!r} is not 'stop' or 'skip'.")
  for key in ("steps", "log_every", "eval_every", "checkpoint_every", "max_skipped_steps"):
    if config.train[key] <= 0:
      raise ValueError(f"config.train.{key} must be positive, got {config.train[key]}.")
  return model_cfg


def validate_data(config: ml_collections.ConfigDict) -> None:
  """config.data against the data set's own info (splits, fields, classes) and the tokenizer
  (the model has a row for each of its ids); each failure names the setting and the fix."""
  sources.check_config(config)
  vocab = make_tokenizer(config).vocab_size if config.loss.objective != "classification" else 0
  if config.model.vocab_size < vocab:
    raise ValueError(f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
                     f"{config.data.tokenizer!r} tokenizer's {vocab} ids; set it to at least {vocab}.")


def prepare_data(config: ml_collections.ConfigDict) -> None:
  """With several processes, process 0 builds what the data needs on first use (a jtrans TFDS
  builder, a SentencePiece model) while the others wait, so that no two processes write it."""
  if jax.process_count() == 1:
    return
  error = None
  if jax.process_index() == 0:
    try:
      if config.loss.objective != "classification":
        tokenizers.from_config(config.data, True, sources.text_keys(config))
      sources.from_config(config.data, train=True)
      sources.from_config(config.data, train=False)
    except Exception as e:  # pylint: disable=broad-except
      error = e  # Raised after the barrier, so that the other processes do not wait forever.
  multihost_utils.sync_global_devices("jtrans: data prepared")
  if error is not None:
    raise error


def make_tokenizer(config: ml_collections.ConfigDict) -> tokenizers.Tokenizer:
  """config.data's tokenizer. A missing SentencePiece model is trained only by a lone
  process: several would race to write it (run jtrans.data.train_tokenizer first)."""
  return tokenizers.from_config(config.data, jax.process_count() == 1, sources.text_keys(config))


def make_dataset(config: ml_collections.ConfigDict, train: bool):
  """The train or eval split as a grain dataset of global batches.

  Every process reads the same stream (same seed, every document) and keeps the rows of its
  own devices (`Engine.place_batch`): the global batch of a step is a function of the step
  alone, so a run gives the same numbers on any number of hosts, and resumes on another.

  The batch format follows config.loss.objective: "lm"/"mlm" packed token rows
  (data/pipeline.py), "seq2seq" source/target pairs (data/seq2seq.py), "classification"
  images and labels (data/images.py).
  """
  d, kind = config.data, config.loss.objective
  common = dict(source=sources.from_config(d, train),
                batch_size=config.train.batch_size, seed=config.seed, train=train,
                worker_count=d.worker_count)
  if kind in ("lm", "mlm"):
    return pipeline.make_lm_dataset(
        **common, name=d.name, split=d.train_split if train else d.eval_split,
        tokenizer=make_tokenizer(config), text_key=d.text_key, seq_len=d.seq_len,
        shuffle_window=d.shuffle_window, segment_ids=d.segment_ids)
  if kind == "seq2seq":
    return seq2seq.make_seq2seq_dataset(
        **common, tokenizer=make_tokenizer(config), source_key=d.source_key, target_key=d.target_key,
        source_len=d.source_len or d.seq_len, seq_len=d.seq_len)
  if kind == "classification":
    return images.make_image_dataset(**common, image_key=d.image_key, label_key=d.label_key,
                                     options=images.ImageOptions.from_config(config))
  raise ValueError(f"config.loss.objective={kind!r} has no data pipeline; use 'lm', 'mlm', "
                   "'seq2seq' or 'classification'.")


def evaluate(engine: Engine, state: Any, batches: Iterable[dict[str, np.ndarray]],
             max_batches: int = 0) -> dict[str, float]:
  """Means over the eval batches (all of them when `max_batches` is 0)."""
  totals = None
  iterator = iter(batches)
  with contextlib.closing(iterator) if hasattr(iterator, "close") else contextlib.nullcontext():
    for i, batch in enumerate(iterator):  # A grain iterator's read-ahead threads end on close.
      if max_batches and i >= max_batches:
        break
      sums = engine.eval_step(state, engine.place_batch(batch))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("the eval split gave no batch; check config.data.eval_split.")
  return {k: float(v) for k, v in losses.normalize(jax.device_get(totals)).items()}


class _StopSignal:
  """Turns SIGTERM/SIGINT (a pre-empted VM, Ctrl-C) into a flag the loop checks each step."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _should_stop(stop: _StopSignal, step: int, every: int) -> bool:
  """Whether a signal asks to stop; with several processes, decided together every `every`
  steps (each host gets its own SIGTERM, but all must save the same step)."""
  if jax.process_count() == 1:
    return stop.received is not None
  if step % every:
    return False
  flags = multihost_utils.process_allgather(np.array(stop.received is not None))
  return bool(np.any(flags))


# ---------------------------------------------------------------- health: NaN/Inf on every step


@jax.jit
def _no_problems(finite: jax.Array) -> dict[str, jax.Array]:
  """Device-side record of non-finite steps: the first (0 = none), how many, the current and
  the longest run of consecutive ones; placed like `finite` (a train step's metric), which
  with several processes is a global array."""
  zero = jnp.zeros_like(finite, jnp.int32)
  return {"first_bad": zero, "bad": zero, "run": zero, "longest_run": zero}


@jax.jit
def _record_health(health: dict[str, jax.Array], finite: jax.Array,
                   step: jax.Array) -> dict[str, jax.Array]:
  """Adds one step's finite flag (from the train step's metrics) without a host sync."""
  bad = finite < 0.5
  run = jnp.where(bad, health["run"] + 1, 0)
  return {"first_bad": jnp.where(bad & (health["first_bad"] == 0), step, health["first_bad"]),
          "bad": health["bad"] + bad, "run": run,
          "longest_run": jnp.maximum(health["longest_run"], run)}


def _check_health(health: dict[str, jax.Array], step: int, train_cfg: ml_collections.ConfigDict,
                  manager) -> int:
  """Reads the record (a host sync: done only before a save, a log line or an evaluation);
  raises as `config.train.nan_policy` says; returns the number of skipped steps."""
  h = {k: int(v) for k, v in jax.device_get(health).items()}
  if train_cfg.nan_policy == "skip" and h["longest_run"] < train_cfg.max_skipped_steps:
    return h["bad"]
  if h["first_bad"] == 0:
    return 0
  manager.wait_until_finished()
  what = (f"{h['longest_run']} consecutive steps had a non-finite loss or gradient (limit "
          f"config.train.max_skipped_steps={train_cfg.max_skipped_steps})"
          if train_cfg.nan_policy == "skip" else
          f"the loss or gradient was not finite at step {h['first_bad']}")
  raise FloatingPointError(
      f"{what}; checked at step {step}, the run stopped without saving it. The last good "
      f"checkpoint (step {manager.latest_step()}) is intact. Lower config.optim.lr, lengthen "
      "config.optim.warmup_steps or set config.optim.grad_clip, then relaunch (or set "
      "config.train.nan_policy='skip' to drop such updates).")


# ---------------------------------------------------------------- the run's record: config.json


def _flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """{"a.b": value} with JSON values, so a config compares equal to its config.json."""
  tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else config
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
    else:
      out[key] = value
  return out


def _leaf_shapes(tree: Any) -> list[tuple]:
  return sorted(tuple(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def check_resume(config: ml_collections.ConfigDict, workdir: str, manager, abstract: Any,
                 log: Callable[[str], None]) -> None:
  """Relaunching a workdir that has a checkpoint: compares `config` with the run's
  config.json. A change of the model, or of any key when the state's shapes no longer match
  the checkpoint, fails naming each key; other changes (steps, cadences, eval batches) are
  logged and kept."""
  path = epath.Path(workdir) / "config.json"
  step = manager.latest_step()
  if step is None or not path.exists():
    return
  before, now = _flat(json.loads(path.read_text())), _flat(config)
  changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
  if not changed:
    return
  try:
    saved_shapes = _leaf_shapes(manager.item_metadata(step)["state"])
  except Exception:  # pylint: disable=broad-except
    saved_shapes = []
  # Unreadable (or missing) metadata says nothing about the model: restore() reports that
  # step as damaged and falls back, so only shapes that were read can make a change fatal.
  shapes_match = not saved_shapes or saved_shapes == _leaf_shapes(abstract)
  fatal = [k for k in changed if k.startswith("model.") or not shapes_match]
  describe = lambda keys: ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in keys)
  if fatal:
    raise ValueError(
        f"{workdir} holds a checkpoint of a different model: the config changes {describe(fatal)} "
        f"(recorded in {path}). Use a new --workdir, or start a new run from this one's "
        "weights with config.train.init_from (after --mode=export), or relaunch with the "
        "recorded values.")
  log(f"config changed on resume (recorded in {path}): {describe(changed)}")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The run's record, `workdir/config.json`: written by training only (process 0)."""
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- the loop


class _Throughput:
  """Tokens/s and MFU between steps whose metrics were read back (so finished), never
  counting steps merely dispatched: the host may run ahead of the device."""

  def __init__(self, tokens_per_step: int, flops_per_token: float, peak: float, devices: int):
    self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
    self.peak, self.devices = peak, devices
    self.restart(0)

  def restart(self, step: int) -> None:
    self.time, self.step = time.perf_counter(), step

  def measure(self, step: int) -> tuple[float, float, float]:
    """(tokens/s, MFU, seconds per step) since the last call or restart."""
    now = time.perf_counter()
    elapsed, done = now - self.time, step - self.step
    tokens_per_second = done * self.tokens_per_step / max(elapsed, 1e-9)
    self.time, self.step = now, step
    return (tokens_per_second, flops.mfu(tokens_per_second, self.flops_per_token, self.peak,
                                         self.devices), elapsed / max(done, 1))


def train(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest intact checkpoint; returns the
  last state.

  `stop_at` ends this invocation (with a checkpoint) once that step is reached, as a
  pre-emption would: for jobs that run a long schedule in time slices. Everything the run
  opens (checkpoint manager, metrics writers, data iterators) is closed on every exit:
  success, exception or signal.
  """
  with contextlib.ExitStack() as stack:
    return _train(config, workdir, stop_at, stack)


def _train(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None,
           stack: contextlib.ExitStack) -> TrainState:
  log = lambda message: print(message, flush=True) if jax.process_index() == 0 else None
  prepare_data(config)
  mesh, model_cfg, model, tx, init, state_shardings, abstract = build_layout(config)
  if config.sample.num_samples and model_cfg.family == "decoder":
    # run.py samples at the end of training: a length that cannot work fails now, not then.
    decoding.check_length(model, len(make_tokenizer(config).encode(config.sample.prompt)),
                          config.sample.length, "config.sample")
  total, t = config.train.steps, config.train
  manager = checkpoint.make_manager(workdir, t)
  stack.callback(manager.close)
  stack.callback(manager.wait_until_finished)  # Runs first: a pending save completes.
  check_resume(config, workdir, manager, abstract, log)
  train_iter = iter(make_dataset(config, train=True))
  stack.callback(train_iter.close)
  eval_ds = make_dataset(config, train=False)
  restored = checkpoint.restore(manager, abstract, train_iter, log=log)
  write_config(config, workdir)
  writer = stack.enter_context(contextlib.closing(
      MetricsWriter(workdir, resumed_from=None if restored is None else restored[1])))
  if restored is None and t.init_from:
    state = pretrained.initial_state(config, model_cfg, tx.init, abstract, state_shardings)
    log(f"initialised from the pretrained weights in {t.init_from}")
  elif restored is None:  # A resumed run never builds the initial state it would throw away.
    state = jax.jit(init, out_shardings=state_shardings)(jax.random.key(config.seed))
  else:
    state, start = restored
    log(f"resumed from step {start} (checkpoint in {manager.directory})")
  start = int(state.step)
  engine = steps.make_engine(model, tx, config, mesh, state_shardings)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  state = engine.place_state(state)

  positions = objectives.positions_per_example(config, model_cfg)
  tokens_per_step = t.batch_size * positions
  # Exact for the decoder LM; for the other families the same 6N-per-position count is an
  # estimate (an encoder-decoder's encoder sees only source positions, for instance).
  flops_per_token = flops.train_flops_per_token(model_cfg, positions)
  speed = _Throughput(tokens_per_step, flops_per_token,
                      flops.peak_flops_per_device(t.peak_flops_per_device), mesh.size)
  entropy = float("nan")  # The unigram baseline only means something for token prediction.
  if config.loss.objective in ("lm", "mlm") and jax.process_index() == 0:  # Only it logs.
    entropy = pipeline.cached_eval_entropy(config.data, make_tokenizer(config))
  log(f"model: {n_params:,} parameters, {flops_per_token / 1e6:.1f} MFLOPs/token; "
      f"mesh {dict(mesh.shape)}; {total} steps of {tokens_per_step} tokens")

  health = None  # Built from the first step's metrics, on the devices where they live.
  stop = stack.enter_context(_StopSignal())
  stack.enter_context(engine.context())
  pending: tuple[int, Metrics] | None = None  # (step, metrics) not yet read back.
  step = last_saved = start
  end = total if stop_at is None else min(stop_at, total)
  while step < end and not _should_stop(stop, step, t.log_every):
    batch = engine.place_batch(next(train_iter))
    began = time.perf_counter()
    state, metrics = engine.train_step(state, batch)  # Dispatched; runs while we read step - 1.
    step += 1
    if health is None:
      health = _no_problems(metrics["finite"])
    health = _record_health(health, metrics["finite"], step)
    if step == start + 1:
      jax.block_until_ready(metrics)
      compile_seconds = time.perf_counter() - began
      log(f"train step compiled and ran once in {compile_seconds:.1f}s")
      writer.write(step, "train", {"compile_seconds": compile_seconds})
      speed.restart(step)
    if pending is not None:  # The previous logged step has finished by now: report it.
      _report(writer, log, *pending, t, manager, speed, total)
      pending = None
    if step % t.log_every == 0 or step == total:
      pending = (step, metrics, health)
    due_save = step % t.checkpoint_every == 0 or step == total
    due_eval = step % t.eval_every == 0 or step == total
    if (due_save or due_eval) and pending is not None:
      _report(writer, log, *pending, t, manager, speed, total)
      pending = None
    if due_save:
      _check_health(health, step, t, manager)  # Never save a state that followed a bad step.
      checkpoint.save(manager, step, engine.global_state(state), train_iter, force=True)
      last_saved = step
    if due_eval:
      _check_health(health, step, t, manager)
      scalars = evaluate(engine, state, eval_ds, t.eval_batches)
      writer.write(step, "eval", scalars)
      log(f"eval at step {step}: loss {scalars['nll']:.4f} nats/token, accuracy "
          f"{scalars['accuracy']:.3f}"
          + (f" (unigram entropy {entropy:.4f} nats/token)" if np.isfinite(entropy) else ""))
      speed.restart(step)  # Evaluation is not training time.
  if pending is not None:
    _report(writer, log, *pending, t, manager, speed, total)
  if step < total and last_saved != step:
    _check_health(health, step, t, manager)
    checkpoint.save(manager, step, engine.global_state(state), train_iter, force=True)
  if step < total:
    why = f"signal {stop.received} received" if stop.received else f"stop_at={stop_at} reached"
    log(f"{why}: saved a checkpoint at step {step}; launch the same command again to resume.")
  return engine.global_state(state)


def _report(writer: MetricsWriter, log: Callable[[str], None], step: int, metrics: Metrics,
            health: dict[str, jax.Array], train_cfg: ml_collections.ConfigDict, manager,
            speed: _Throughput, total: int) -> None:
  """Reads back one step's metrics and health (as of that step): metrics.jsonl, TensorBoard
  and the progress line."""
  skipped = _check_health(health, step, train_cfg, manager)
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"}
  tokens_per_second, mfu, seconds_per_step = speed.measure(step)
  scalars |= {"tokens_per_second": tokens_per_second, "mfu": mfu, "skipped_steps": skipped}
  writer.write(step, "train", scalars)
  log(progress_line(step, total, scalars, tokens_per_second, mfu,
                    (total - step) * seconds_per_step))


def sample_text(config: ml_collections.ConfigDict, params: Any, seed: int = 0) -> list[str]:
  """`config.sample.num_samples` continuations of `config.sample.prompt`."""
  s = config.sample
  tok = make_tokenizer(config)
  prompt = tok.encode(s.prompt)
  model = build_model(config.model)
  out = decoding.generate(model, params, np.tile(prompt, (s.num_samples, 1)),
                          np.full(s.num_samples, len(prompt)), jax.random.key(seed),
                          max_new_tokens=s.length, temperature=s.temperature,
                          top_k=s.top_k, top_p=s.top_p)
  return [tok.decode(np.concatenate([prompt, row])) for row in np.asarray(out.tokens)]


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Eval-split metrics of the workdir's latest checkpoint (writes nothing to the workdir)."""
  prepare_data(config)
  parts = build_layout(config)
  state, step = restore_latest(config, workdir, parts.abstract)
  engine = steps.make_engine(parts.model, parts.tx, config, parts.mesh, parts.shardings)
  with engine.context():
    scalars = evaluate(engine, engine.place_state(state), make_dataset(config, train=False),
                       config.train.eval_batches)
  return {"step": step, **scalars}


def restore_latest(config: ml_collections.ConfigDict, workdir: str, abstract: Any) -> tuple[Any, int]:
  """(state, step) of the workdir's latest intact checkpoint, for evaluation and export. The
  manager only reads (a training run may be writing the same workdir) and is closed before any
  error, so the error is the last thing printed."""
  with contextlib.closing(checkpoint.make_manager(workdir, config.train, read_only=True)) as manager:
    restored = checkpoint.restore(manager, abstract, quarantine=False)
    if restored is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}; train first with the same "
                              "--config and --workdir (--mode=train), or pass --hf_dir.")
  return restored
