"""The one training loop: the sharded train state, and `train(config, workdir)`."""
from __future__ import annotations

import signal
import time
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
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
  vocab = make_tokenizer(config).vocab_size if config.loss.objective != "classification" else 0
  if config.model.vocab_size < vocab:
    raise ValueError(f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
                     f"{config.data.tokenizer!r} tokenizer's {vocab} ids; set it to at least {vocab}.")
  sharding.check_batch_size(config.train.batch_size, mesh)
  k = config.train.grad_accum_steps
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if k < 1 or config.train.batch_size % (k * shards):
    raise ValueError(f"config.train.grad_accum_steps={k} must split config.train.batch_size="
                     f"{config.train.batch_size} into micro-batches that the {shards} batch shards "
                     f"divide; use a batch size that is a multiple of {k * shards}.")
  for key in ("steps", "log_every", "eval_every", "checkpoint_every"):
    if config.train[key] <= 0:
      raise ValueError(f"config.train.{key} must be positive, got {config.train[key]}.")
  return model_cfg


def make_tokenizer(config: ml_collections.ConfigDict) -> tokenizers.Tokenizer:
  """config.data's tokenizer. A missing SentencePiece model is trained only by a lone
  process: several would race to write it (run jtrans.data.train_tokenizer first)."""
  return tokenizers.from_config(config.data, train_if_missing=jax.process_count() == 1)


def make_dataset(config: ml_collections.ConfigDict, train: bool):
  """This process's share of the train or eval split as a grain dataset of batches.

  The batch format follows config.loss.objective: "lm"/"mlm" packed token rows
  (data/pipeline.py), "seq2seq" source/target pairs (data/seq2seq.py), "classification"
  images and labels (data/images.py).
  """
  d, kind = config.data, config.loss.objective
  common = dict(source=sources.from_config(d, train),
                batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
                train=train, shard_index=jax.process_index(), shard_count=jax.process_count(),
                worker_count=d.worker_count)
  if kind in ("lm", "mlm"):
    return pipeline.make_lm_dataset(
        **common, tokenizer=make_tokenizer(config), text_key=d.text_key, seq_len=d.seq_len,
        shuffle_window=d.shuffle_window, segment_ids=d.segment_ids)
  if kind == "seq2seq":
    return seq2seq.make_seq2seq_dataset(
        **common, tokenizer=make_tokenizer(config), source_key=d.source_key, target_key=d.target_key,
        source_len=d.source_len or d.seq_len, seq_len=d.seq_len)
  if kind == "classification":
    return images.make_image_dataset(**common, image_key=d.image_key, label_key=d.label_key)
  raise ValueError(f"config.loss.objective={kind!r} has no data pipeline; use 'lm', 'mlm', "
                   "'seq2seq' or 'classification'.")


def evaluate(engine: Engine, state: Any, batches: Iterable[dict[str, np.ndarray]],
             max_batches: int = 0) -> dict[str, float]:
  """Means over the eval batches (all of them when `max_batches` is 0)."""
  totals = None
  for i, batch in enumerate(batches):
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


def _check_finite(step: int, scalars: dict[str, float], manager) -> None:
  if not np.isfinite(scalars["loss"]):
    manager.wait_until_finished()
    raise FloatingPointError(
        f"training loss is {scalars['loss']} at step {step}; the run stopped and the last good "
        f"checkpoint (step {manager.latest_step()}) is intact. Lower config.optim.lr, lengthen "
        "config.optim.warmup_steps or set config.optim.grad_clip, then relaunch.")


def train(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last state.

  `stop_at` ends this invocation (with a checkpoint) once that step is reached, as a
  pre-emption would: for jobs that run a long schedule in time slices.
  """
  mesh = sharding.make_mesh(config.mesh)
  model_cfg = validate(config, mesh)
  model = build_model(model_cfg)
  total = config.train.steps
  tx = optim.make_optimizer(config.optim, total)
  writer = MetricsWriter(workdir)
  manager = checkpoint.make_manager(workdir, config.train)

  init, state_shardings, abstract = state_layout(model, tx, config, mesh)
  train_iter = iter(make_dataset(config, train=True))
  eval_ds = make_dataset(config, train=False)
  restored = checkpoint.restore(manager, abstract, train_iter)
  if restored is None and config.train.init_from:
    state = pretrained.initial_state(config, model_cfg, tx.init, abstract, state_shardings)
    writer.log(f"initialised from the pretrained weights in {config.train.init_from}")
  elif restored is None:  # A resumed run never builds the initial state it would throw away.
    state = jax.jit(init, out_shardings=state_shardings)(jax.random.key(config.seed))
  else:
    state, start = restored
    writer.log(f"resumed from step {start} (checkpoint in {manager.directory})")
  start = int(state.step)
  engine = steps.make_engine(model, tx, config, mesh, state_shardings)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  state = engine.place_state(state)

  positions = objectives.positions_per_example(config, model_cfg)
  tokens_per_step = config.train.batch_size * positions
  # Exact for the decoder LM; for the other families the same 6N-per-position count is an
  # estimate (an encoder-decoder's encoder sees only source positions, for instance).
  flops_per_token = flops.train_flops_per_token(model_cfg, positions)
  peak = flops.peak_flops_per_device(config.train.peak_flops_per_device)
  entropy = float("nan")  # The unigram baseline only means something for token prediction.
  if config.loss.objective in ("lm", "mlm"):
    entropy = pipeline.unigram_entropy(source=sources.from_config(config.data, train=False),
                                       tokenizer=make_tokenizer(config), text_key=config.data.text_key)
  writer.log(f"model: {n_params:,} parameters, {flops_per_token / 1e6:.1f} MFLOPs/token; "
             f"mesh {dict(mesh.shape)}; {total} steps of {tokens_per_step} tokens")

  def run_eval(step: int) -> dict[str, float]:
    scalars = evaluate(engine, state, eval_ds, config.train.eval_batches)
    writer.write(step, "eval", scalars)
    writer.log(f"eval at step {step}: loss {scalars['nll']:.4f} nats/token, accuracy "
               f"{scalars['accuracy']:.3f}"
               + (f" (unigram entropy {entropy:.4f} nats/token)" if np.isfinite(entropy) else ""))
    return scalars

  pending: tuple[int, Metrics] | None = None  # (step, metrics) not yet read back.
  # Throughput is measured between steps whose metrics were read back (so finished), never
  # counting steps merely dispatched: the host may run ahead of the device.
  window_time, window_step, compile_seconds = time.perf_counter(), start, None

  def report(step: int, metrics: Metrics) -> dict[str, float]:
    nonlocal window_time, window_step
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_finite(step, scalars, manager)
    now = time.perf_counter()
    elapsed, done = now - window_time, step - window_step
    tokens_per_second = done * tokens_per_step / max(elapsed, 1e-9)
    scalars["tokens_per_second"] = tokens_per_second
    scalars["mfu"] = flops.mfu(tokens_per_second, flops_per_token, peak, mesh.size)
    writer.write(step, "train", scalars)
    eta = (total - step) * elapsed / max(done, 1)
    writer.log(progress_line(step, total, scalars, tokens_per_second, scalars["mfu"], eta))
    window_time, window_step = now, step
    return scalars

  def flush() -> None:
    """Reads back and reports the pending step's metrics, if any."""
    nonlocal pending
    if pending is not None:
      report(*pending)
      pending = None

  with _StopSignal() as stop, engine.context():
    step = last_saved = start
    end = total if stop_at is None else min(stop_at, total)
    while step < end and not _should_stop(stop, step, config.train.log_every):
      batch = engine.place_batch(next(train_iter))
      began = time.perf_counter()
      state, metrics = engine.train_step(state, batch)  # Dispatched; runs while we read step - 1 below.
      step += 1
      if compile_seconds is None:
        jax.block_until_ready(metrics)
        compile_seconds = time.perf_counter() - began
        writer.log(f"train step compiled and ran once in {compile_seconds:.1f}s")
        writer.write(step, "train", {"compile_seconds": compile_seconds})
        window_time, window_step = time.perf_counter(), step
      flush()
      if step % config.train.log_every == 0 or step == total:
        pending = (step, metrics)
      if step % config.train.checkpoint_every == 0 or step == total:
        flush()  # Never checkpoint a state whose loss was not checked finite.
        checkpoint.save(manager, step, engine.global_state(state), train_iter, force=True)
        last_saved = step
      if step % config.train.eval_every == 0 or step == total:
        flush()
        run_eval(step)
        window_time, window_step = time.perf_counter(), step  # Evaluation is not training time.
    flush()
    if step < total and last_saved != step:
      checkpoint.save(manager, step, engine.global_state(state), train_iter, force=True)
    if step < total:
      why = f"signal {stop.received} received" if stop.received else f"stop_at={stop_at} reached"
      writer.log(f"{why}: saved a checkpoint at step {step}; launch the same command again "
                 "to resume.")
  manager.wait_until_finished()
  manager.close()
  writer.close()
  return engine.global_state(state)


def sample_text(config: ml_collections.ConfigDict, params: Any, seed: int = 0) -> list[str]:
  """`config.sample.num_samples` continuations of `config.sample.prompt`."""
  s = config.sample
  tok = make_tokenizer(config)
  prompt = tok.encode(s.prompt)
  buffer = min(config.model.max_len, len(prompt) + s.length)
  if len(prompt) >= buffer:
    raise ValueError(f"config.sample.prompt is {len(prompt)} tokens; it must be shorter than "
                     f"config.model.max_len={config.model.max_len}.")
  model = build_model(config.model)
  out = decoding.generate(model, params, np.tile(prompt, (s.num_samples, 1)),
                          np.full(s.num_samples, len(prompt)), jax.random.key(seed),
                          max_new_tokens=buffer - len(prompt), temperature=s.temperature,
                          top_k=s.top_k, top_p=s.top_p)
  return [tok.decode(np.concatenate([prompt, row])) for row in np.asarray(out.tokens)]


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Eval-split metrics of the workdir's latest checkpoint."""
  mesh = sharding.make_mesh(config.mesh)
  model = build_model(validate(config, mesh))
  tx = optim.make_optimizer(config.optim, config.train.steps)
  _, shardings, abstract = state_layout(model, tx, config, mesh)
  manager = checkpoint.make_manager(workdir, config.train)
  restored = checkpoint.restore(manager, abstract)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}; train first with the same "
                            "--config and --workdir and --mode=train.")
  state, step = restored
  engine = steps.make_engine(model, tx, config, mesh, shardings)
  with engine.context():
    scalars = evaluate(engine, engine.place_state(state), make_dataset(config, train=False),
                       config.train.eval_batches)
  manager.close()
  return {"step": step, **scalars}
