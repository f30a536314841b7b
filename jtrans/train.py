"""The training loop: `train(config, workdir)` takes a run's parts (`parts.build`) from its
latest intact checkpoint (or its initial state) to its last step, and every exit leaves the
workdir resumable.

One screen: `_open` restores or initialises the state and opens the workdir; `_loop` dispatches
each step and reads the previous one back, with the cadences (report, save, evaluate, stop) as
small functions over a `_Progress` record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from jtrans import checkpoint, decoding, flops, losses, objectives, parts
from jtrans import finetune as finetuning
from jtrans.data import chat, pipeline
from jtrans.decoding import scores as decoding_scores
from jtrans.finetune import lora
from jtrans.finetune import peft as peft_files
from jtrans.hf import pretrained
from jtrans.metrics import MetricsWriter, progress_line
from jtrans.steps import Engine, Metrics, TrainState


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """What the loop reads of config.train: its length and cadences, and the NaN policy."""

  steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  eval_batches: int  # 0 = the whole eval split.
  eval_generate: int  # seq2seq sources decoded and scored per evaluation; 0 = none.
  nan_policy: str  # "stop" or "skip".
  max_skipped_steps: int

  @classmethod
  def from_config(cls, train: ml_collections.ConfigDict) -> LoopSettings:
    return cls(**{f.name: train[f.name] for f in dataclasses.fields(cls)})


def evaluate(
  engine: Engine,
  state: Any,
  batches: Iterable[dict[str, np.ndarray]],
  max_batches: int = 0,
  token_bytes: np.ndarray | None = None,
) -> dict[str, float]:
  """Means over the eval batches (all of them when `max_batches` is 0). With `token_bytes`
  (`[vocab]` UTF-8 bytes per id: `Run.token_bytes`), also `bits_per_byte` = summed nll / (ln 2 x
  the targets' bytes), and `bytes_per_token`: comparable across tokenizers."""
  totals, target_bytes = None, 0.0
  iterator = iter(batches)
  with contextlib.closing(iterator) if hasattr(iterator, "close") else contextlib.nullcontext():
    for i, batch in enumerate(iterator):  # A grain iterator's read-ahead threads end on close.
      if max_batches and i >= max_batches:
        break
      sums = engine.eval_step(state, engine.place_batch(batch))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
      if token_bytes is not None:  # On the host: this process's rows, added up below.
        target_bytes += float(np.sum(token_bytes[batch["targets"]] * batch["weights"]))
  if totals is None:
    raise ValueError("the eval split gave no batch; check config.data.eval_split.")
  means = {k: float(v) for k, v in losses.normalize(jax.device_get(totals)).items()}
  if token_bytes is not None:
    if jax.process_count() > 1:
      target_bytes = float(np.sum(multihost_utils.process_allgather(np.float64(target_bytes))))
    means["bytes_per_token"] = target_bytes / max(means["tokens"], 1e-9)
    means["bits_per_byte"] = means["nll"] / (math.log(2) * max(means["bytes_per_token"], 1e-9))
  return means


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
def _record_health(
  health: dict[str, jax.Array], finite: jax.Array, step: jax.Array
) -> dict[str, jax.Array]:
  """Adds one step's finite flag (from the train step's metrics) without a host sync."""
  bad = finite < 0.5
  run = jnp.where(bad, health["run"] + 1, 0)
  return {
    "first_bad": jnp.where(bad & (health["first_bad"] == 0), step, health["first_bad"]),
    "bad": health["bad"] + bad,
    "run": run,
    "longest_run": jnp.maximum(health["longest_run"], run),
  }


def _check_health(health: dict[str, jax.Array], step: int, settings: LoopSettings, manager) -> int:
  """Reads the record (a host sync: done only before a save, a log line or an evaluation);
  raises as `config.train.nan_policy` says; returns the number of skipped steps."""
  h = {k: int(v) for k, v in jax.device_get(health).items()}
  if settings.nan_policy == "skip" and h["longest_run"] < settings.max_skipped_steps:
    return h["bad"]
  if h["first_bad"] == 0:
    return 0
  manager.wait_until_finished()
  what = (
    f"{h['longest_run']} consecutive steps had a non-finite loss or gradient (limit "
    f"config.train.max_skipped_steps={settings.max_skipped_steps})"
    if settings.nan_policy == "skip"
    else f"the loss or gradient was not finite at step {h['first_bad']}"
  )
  raise FloatingPointError(
    f"{what}; checked at step {step}, the run stopped without saving it. The last good "
    f"checkpoint (step {manager.latest_step()}) is intact. Lower config.optim.lr, lengthen "
    "config.optim.warmup_steps or set config.optim.grad_clip, then relaunch (or set "
    "config.train.nan_policy='skip' to drop such updates)."
  )


# ---------------------------------------------------------------- the run's record: config.json


def _flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """{"a.b": value} with JSON values, so a config compares equal to its config.json."""
  tree = (
    json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else config
  )
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
    else:
      out[key] = value
  return out


def _leaf_shapes(tree: Any) -> list[tuple]:
  return sorted(tuple(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def check_resume(
  config: ml_collections.ConfigDict,
  workdir: str,
  manager,
  abstract: Any,
  log: Callable[[str], None],
) -> None:
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
      "recorded values."
    )
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
    return (
      tokens_per_second,
      flops.mfu(tokens_per_second, self.flops_per_token, self.peak, self.devices),
      elapsed / max(done, 1),
    )


class _Session(NamedTuple):
  """What one call of `train` has open: the workdir's manager and writer, the data position."""

  manager: Any  # orbax CheckpointManager
  writer: MetricsWriter
  train_iter: Any  # The resumable train batch iterator.
  stop: _StopSignal
  speed: _Throughput
  log: Callable[[str], None]
  entropy: float  # The eval split's unigram entropy (token objectives), else NaN.
  start: int  # The step this call starts from (read before the state is placed).
  seconds: dict[str, float]  # Wall seconds by activity (`TIME_PARTS`), for the breakdown.


@dataclasses.dataclass
class _Progress:
  """What the loop carries from step to step; the cadence functions read and update it."""

  step: int
  first: int  # The step this call started from.
  last_saved: int
  health: dict[str, jax.Array] | None = None  # Device-side record of non-finite steps.
  pending: tuple | None = None  # (step, metrics, health) dispatched but not yet read back.


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop_at: int | None = None,
  *,
  run: parts.Run | None = None,
  began: float | None = None,
) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest intact checkpoint; returns the
  last state. `run`: the parts already built from `config` (else built here); `began`: the
  `time.perf_counter()` at which the caller started the run, for the start-up time.

  `stop_at` ends this invocation (with a checkpoint) once that step is reached, as a
  pre-emption would: for jobs that run a long schedule in time slices. Everything the run
  opens (checkpoint manager, metrics writers, data iterators) is closed on every exit:
  success, exception or signal.
  """
  began = time.perf_counter() if began is None else began
  run = parts.build(config) if run is None else run
  with contextlib.ExitStack() as stack:
    session, state = _open(run, workdir, stack)
    session.seconds["start-up"] = time.perf_counter() - began
    return _loop(run, session, state, stop_at)


def _open(run: parts.Run, workdir: str, stack: contextlib.ExitStack) -> tuple[_Session, Any]:
  """Opens the workdir (checkpoints, config.json, metrics) and returns the placed state: the
  latest intact checkpoint's, the pretrained weights' or a fresh one."""
  config, layout, t = run.config, run.layout, run.config.train
  log = lambda message: print(message, flush=True) if jax.process_index() == 0 else None
  if config.sample.num_samples and layout.model_cfg.family == "decoder":
    # Samples follow training: a length that cannot work fails now, not then.
    decoding.check_length(
      layout.model,
      len(chat.prompts(run.chat_format, run.tokenizer, [config.sample.prompt])[0][0])
      + layout.tuning.virtual_tokens,  # A prefix or soft prompt takes the first positions.
      config.sample.length,
      "config.sample",
    )
  manager = checkpoint.make_manager(workdir, t)
  stack.callback(manager.close)
  stack.callback(manager.wait_until_finished)  # Runs first: a pending save completes.
  check_resume(config, workdir, manager, layout.abstract, log)
  train_iter = iter(run.train_data)
  stack.callback(train_iter.close)
  restored = checkpoint.restore(manager, layout.abstract, train_iter, log=log)
  write_config(config, workdir)
  writer = stack.enter_context(
    contextlib.closing(
      MetricsWriter(workdir, resumed_from=None if restored is None else restored[1])
    )
  )
  state = _initial_state(run, restored, manager.directory, log)
  speed, entropy = _meters(run, state, log)
  stack.enter_context(run.engine.context())
  stop = stack.enter_context(_StopSignal())
  seconds = dict.fromkeys(TIME_PARTS, 0.0)
  session = _Session(
    manager, writer, train_iter, stop, speed, log, entropy, int(state.step), seconds
  )
  return session, run.engine.place_state(state)


def _initial_state(
  run: parts.Run, restored: tuple[Any, int] | None, directory: Any, log: Callable[[str], None]
) -> TrainState:
  """The restored checkpoint's state, else the pretrained weights' (train.init_from), else a
  fresh one (never built for a resumed run, which would throw it away)."""
  config, layout = run.config, run.layout
  if restored is not None:
    log(f"resumed from step {restored[1]} (checkpoint in {directory})")
    return restored[0]
  if config.train.init_from:
    log(f"initialised from the pretrained weights in {config.train.init_from}")
    state = pretrained.initial_state(
      config, layout.model_cfg, layout.tx.init, layout.abstract, layout.shardings
    )
  else:
    state = jax.jit(layout.init, out_shardings=layout.shardings)(jax.random.key(config.seed))
  if layout.tuning.lora_from:
    log(f"LoRA adapters from {layout.tuning.lora_from}")
    state = _with_peft_adapters(state, layout)
  return state


def _with_peft_adapters(state: TrainState, layout: parts.Layout) -> TrainState:
  """The fresh state with its LoRA adapters read from config.finetune.lora_from (PEFT's files)."""
  tuning = layout.tuning
  adapters, theirs = peft_files.load_adapter(tuning.lora_from, layout.model_cfg)
  if (theirs.lora_rank, theirs.lora_alpha) != (tuning.lora_rank, tuning.lora_alpha):
    raise ValueError(
      f"config.finetune.lora_from={tuning.lora_from!r} has r={theirs.lora_rank} and "
      f"lora_alpha={theirs.lora_alpha:g}; set config.finetune.lora_rank and lora_alpha to them."
    )
  want = jax.tree.map(lambda x: x.shape, layout.abstract.params[lora.KEY])
  got = jax.tree.map(lambda x: x.shape, adapters)
  if want != got:
    modules = sorted(p.rsplit("/", 1)[0] for p in lora.flatten_paths(adapters))
    raise ValueError(
      f"config.finetune.lora_from={tuning.lora_from!r} adapts {modules[:8]}; "
      f"config.finetune.lora_targets={tuning.lora_targets!r} chooses other kernels. Set "
      f"lora_targets to a regex of exactly those modules (e.g. {theirs.lora_targets!r})."
    )
  placed = jax.device_put(adapters, layout.shardings.params[lora.KEY])
  return dataclasses.replace(state, params={**state.params, lora.KEY: placed})


def _meters(
  run: parts.Run, state: TrainState, log: Callable[[str], None]
) -> tuple[_Throughput, float]:
  """The throughput meter and the eval split's unigram entropy (token objectives; NaN
  otherwise); logs the model's size, FLOPs per token and mesh."""
  config, layout, t = run.config, run.layout, run.config.train
  positions = objectives.positions_per_example(config, layout.model_cfg)
  # Exact for the decoder LM; for the other families the same 6N-per-position count is an
  # estimate (an encoder-decoder's encoder sees only source positions, for instance). A frozen
  # base gets no weight gradients: (4 + 2 x trained share) N.
  share = finetuning.trained_share(layout.abstract.params, layout.tuning)
  flops_per_token = flops.train_flops_per_token(layout.model_cfg, positions, share)
  peak = flops.peak_flops_per_device(t.peak_flops_per_device)
  speed = _Throughput(t.batch_size * positions, flops_per_token, peak, layout.mesh.size)
  entropy = float("nan")
  if config.loss.objective in ("lm", "mlm") and jax.process_index() == 0:  # Only it logs.
    entropy = pipeline.cached_eval_entropy(config.data, run.tokenizer, run.chat_format)
  log(
    f"model: {sum(x.size for x in jax.tree.leaves(state.params)):,} parameters, "
    f"{flops_per_token / 1e6:.1f} MFLOPs/token; mesh {dict(layout.mesh.shape)}; "
    f"{t.steps} steps of {t.batch_size * positions} tokens"
  )
  if layout.tuning.freezes:
    trained, total = finetuning.count(state.params, layout.tuning)
    log(
      f"fine-tuning ({layout.tuning.method}): {trained:,} of {total:,} parameters trained "
      f"({100 * trained / total:.2f}%), the rest frozen"
    )
  return speed, entropy


def _loop(run: parts.Run, s: _Session, state: Any, stop_at: int | None) -> TrainState:
  """Steps until the last (or `stop_at`, or a signal); the previous step is read back while
  the next one runs, and nothing is saved after a step whose loss or gradient was not finite."""
  settings, engine = LoopSettings.from_config(run.config.train), run.engine
  p = _Progress(step=s.start, first=s.start, last_saved=s.start)
  end = settings.steps if stop_at is None else min(stop_at, settings.steps)
  loop_began = time.perf_counter()
  while p.step < end and not _should_stop(s.stop, p.step, settings.log_every):
    with _timed(s, "data"):
      batch = engine.place_batch(next(s.train_iter))
    began = time.perf_counter()
    state, metrics = engine.train_step(state, batch)  # Dispatched; runs while we read step - 1.
    p.step += 1
    p.health = _record_health(
      _no_problems(metrics["finite"]) if p.health is None else p.health, metrics["finite"], p.step
    )
    if p.step == p.first + 1:
      _first_step_ran(s, metrics, began, p.step)
    _report_pending(p, s, settings)  # The previous logged step has finished by now.
    if p.step % settings.log_every == 0 or p.step == settings.steps:
      p.pending = (p.step, metrics, p.health)
    due_save = p.step % settings.checkpoint_every == 0 or p.step == settings.steps
    due_eval = p.step % settings.eval_every == 0 or p.step == settings.steps
    if due_save or due_eval:
      _report_pending(p, s, settings)
    if due_save:
      with _timed(s, "checkpoint"):
        _save(p, s, settings, engine.global_state(state))
    if due_eval:
      with _timed(s, "eval"):
        _evaluate(p, s, settings, run, state)
  _report_pending(p, s, settings)
  if p.step < settings.steps and p.last_saved != p.step:
    with _timed(s, "checkpoint"):
      _save(p, s, settings, engine.global_state(state))
  _report_time(s, time.perf_counter() - loop_began, p.step)
  if p.step < settings.steps:
    why = f"signal {s.stop.received} received" if s.stop.received else f"stop_at={stop_at} reached"
    s.log(f"{why}: saved a checkpoint at step {p.step}; launch the same command again to resume.")
  return engine.global_state(state)


def _first_step_ran(s: _Session, metrics: Metrics, began: float, step: int) -> None:
  """The first step of a call compiles: its time is reported apart, not as throughput (and
  recorded in the call's "time" record: a "train" record here would repeat the step's own
  when a resumed call's first step is a log step)."""
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - began
  s.seconds["compile"] = compile_seconds
  s.log(f"train step compiled and ran once in {compile_seconds:.1f}s")
  s.speed.restart(step)


TIME_PARTS = ("start-up", "compile", "data", "steps", "eval", "checkpoint")


@contextlib.contextmanager
def _timed(s: _Session, activity: str) -> Iterator[None]:
  """Adds the wall time of the `with` body to `s.seconds[activity]`."""
  began = time.perf_counter()
  yield
  s.seconds[activity] += time.perf_counter() - began


def _report_time(s: _Session, loop_seconds: float, step: int) -> None:
  """Logs (and records) where this call's wall time went: "steps" is the loop's time less the
  first step's compile, the data, the evaluations and the checkpoints, so the host's own work
  between steps (metrics, logging) is counted in it."""
  t = s.seconds
  t["steps"] = max(loop_seconds - t["compile"] - t["data"] - t["eval"] - t["checkpoint"], 0.0)
  share = t["steps"] / max(loop_seconds, 1e-9)
  s.log(
    "time: "
    + ", ".join(f"{name} {t[name]:.1f}s" for name in TIME_PARTS)
    + f"; steps are {100 * share:.0f}% of the time after start-up"
  )
  s.writer.write(step, "time", {f"{name}_seconds": t[name] for name in TIME_PARTS})


def _report_pending(p: _Progress, s: _Session, settings: LoopSettings) -> None:
  """Reads back the pending step's metrics and health (as of that step): metrics.jsonl,
  TensorBoard and the progress line."""
  if p.pending is None:
    return
  step, metrics, health = p.pending
  p.pending = None
  skipped = _check_health(health, step, settings, s.manager)
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"}
  tokens_per_second, mfu, seconds_per_step = s.speed.measure(step)
  scalars |= {"tokens_per_second": tokens_per_second, "mfu": mfu, "skipped_steps": skipped}
  s.writer.write(step, "train", scalars)
  s.log(
    progress_line(
      step,
      settings.steps,
      scalars,
      tokens_per_second,
      mfu,
      (settings.steps - step) * seconds_per_step,
    )
  )


def _save(p: _Progress, s: _Session, settings: LoopSettings, state: TrainState) -> None:
  _check_health(p.health, p.step, settings, s.manager)  # Never save a state after a bad step.
  checkpoint.save(s.manager, p.step, state, s.train_iter, force=True)
  p.last_saved = p.step


def _evaluate(
  p: _Progress, s: _Session, settings: LoopSettings, run: parts.Run, state: Any
) -> None:
  _check_health(p.health, p.step, settings, s.manager)
  scalars = evaluate(run.engine, state, run.eval_data, settings.eval_batches, run.token_bytes)
  if settings.eval_generate:
    scored = generation_scores(run, state.params)
    scalars |= scored.scores
    s.log(f"eval at step {p.step}: {describe(scored)}")
  s.writer.write(p.step, "eval", scalars)
  s.log(
    f"eval at step {p.step}: loss {scalars['nll']:.4f}"
    + (" nats/token" if run.config.loss.objective in objectives.TOKENS else "")
    + (f" ({scalars['bits_per_byte']:.4f} bits/byte)" if "bits_per_byte" in scalars else "")
    + (f", accuracy {scalars['accuracy']:.3f}" if "accuracy" in scalars else "")
    + (
      f", zero-shot accuracy {scalars['zero_shot_accuracy']:.3f}"
      if "zero_shot_accuracy" in scalars
      else ""
    )
    + (f" (unigram entropy {s.entropy:.4f} nats/token)" if np.isfinite(s.entropy) else "")
  )
  s.speed.restart(p.step)  # Evaluation is not training time.


def sample_text(run: parts.Run, params: Any, seed: int = 0) -> list[str]:
  """`config.sample.num_samples` continuations of `config.sample.prompt`."""
  s, tok = run.config.sample, run.tokenizer
  (prompt,), eos_id = chat.prompts(run.chat_format, tok, [s.prompt])
  out = decoding.generate(
    run.layout.model,
    finetuning.model_params(params, run.layout.tuning, run.layout.model),
    np.tile(prompt, (s.num_samples, 1)),
    np.full(s.num_samples, len(prompt)),
    jax.random.key(seed),
    max_new_tokens=s.length,
    temperature=s.temperature,
    top_k=s.top_k,
    top_p=s.top_p,
    eos_id=eos_id if run.chat_format else None,  # A reply ends its turn.
    pad_id=tok.pad_id,
  )
  return [tok.decode(np.concatenate([prompt, row])) for row in np.asarray(out.tokens)]


def generation_scores(run: parts.Run, params: Any) -> decoding_scores.Scored:
  """The first `config.train.eval_generate` eval sources decoded as config.sample says
  (greedy, or beam search with num_beams) and scored against their targets."""
  sample = run.config.sample
  return decoding_scores.seq2seq_scores(
    run.layout.model,
    finetuning.model_params(params, run.layout.tuning, run.layout.model),
    run.eval_data,
    run.tokenizer,
    examples=run.config.train.eval_generate,
    max_new_tokens=run.config.data.seq_len,
    num_beams=sample.num_beams,
    length_penalty=sample.length_penalty,
    length_penalty_style=sample.length_penalty_style,
  )


def describe(scored: decoding_scores.Scored) -> str:
  """`200 sources decoded (beam 4): exact match 0.990, BLEU 98.10 (<signature>); e.g. ...`."""
  s = scored.scores
  return (
    f"{len(scored.hypotheses)} sources decoded: exact match {s['exact_match']:.3f}, BLEU "
    f"{s['bleu']:.2f} ({scored.signature}); e.g. {scored.hypotheses[0]!r} for "
    f"{scored.references[0]!r}"
  )


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Eval-split metrics of the workdir's latest checkpoint (writes nothing to the workdir),
  with the generated outputs' scores when config.train.eval_generate is set."""
  run = parts.build(config, train_data=False)
  state, step = restore_latest(config, workdir, run.layout.abstract)
  with run.engine.context():
    state = run.engine.place_state(state)
    scalars = evaluate(run.engine, state, run.eval_data, config.train.eval_batches, run.token_bytes)
    if config.train.eval_generate:
      scalars |= generation_scores(run, state.params).scores
  return {"step": step, **scalars}


def restore_latest(
  config: ml_collections.ConfigDict, workdir: str, abstract: Any
) -> tuple[Any, int]:
  """(state, step) of the workdir's latest intact checkpoint, for evaluation and export. The
  manager only reads (a training run may be writing the same workdir) and is closed before any
  error, so the error is the last thing printed."""
  with contextlib.closing(
    checkpoint.make_manager(workdir, config.train, read_only=True)
  ) as manager:
    restored = checkpoint.restore(manager, abstract, quarantine=False)
    if restored is None:
      raise FileNotFoundError(
        f"no checkpoint in {manager.directory}; train first with the same "
        "--config and --workdir (--mode=train), or pass --hf_dir."
      )
  return restored
