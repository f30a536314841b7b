"""A run's parts, built once from its config and handed on.

`build(config)` checks the config, then makes the mesh, the model and its typed config, the
optimizer, the state's shardings, the tokenizer, the train and eval data and the engine that
runs the steps: a `Run`. The loop (`train.py`), evaluation, sampling and the AOT report
(`build_layout` alone: no data) take these parts instead of re-reading the config. What lives
in the workdir (checkpoint manager, metrics writer) is opened and closed by the loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jtrans import finetune as finetuning
from jtrans import kernels, objectives, optim, parametrization, sharding, steps
from jtrans.data import chat, images, pipeline, seq2seq, sources, span_corruption, tokenizers
from jtrans.finetune import lora, prefix, prompt
from jtrans.models import ModelConfig, build_model, example_inputs
from jtrans.steps import Engine, TrainState

# ---------------------------------------------------------------- the model, optimizer and state


def state_layout(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[Callable, TrainState, Any]:
  """(init function of an rng, the state's shardings, its abstract shapes carrying them).

  Shapes come from `eval_shape`, shardings from the parameters' logical axis names; the
  optimizer state is sharded like the parameters it mirrors.
  """
  axis_rules = sharding.rules(config.mesh)
  example = example_inputs(
    ModelConfig.from_config(config.model), config.data.seq_len, config.data.source_len
  )

  tuning = finetuning.Settings.from_config(config)

  def init(rng):
    params = nn.meta.unbox(model.init(rng, *example)["params"])
    params = finetune_params(params, tuning, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  rng = jax.random.key(config.seed)
  boxed_params = jax.eval_shape(lambda r: model.init(r, *example)["params"], rng)
  param_shardings = sharding.logical_shardings(boxed_params, mesh, axis_rules)
  shapes = jax.eval_shape(init, rng)
  replicated = sharding.replicated(mesh)
  for key in finetuning.ADAPTER_KEYS:  # Adapters are small: every device holds them whole.
    if key in shapes.params:
      param_shardings = {
        **param_shardings,
        key: jax.tree.map(lambda _: replicated, shapes.params[key]),
      }
  masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731 (frozen leaves: no state)
  opt_shardings = optax.tree_map_params(
    tx,
    lambda p, s: p if masked(p) else s,
    shapes.opt_state,
    param_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=masked,
  )
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
  )
  return init, shardings, abstract


def finetune_params(params: Any, tuning: finetuning.Settings, rng: jax.Array) -> Any:
  """The model's initial (or imported) parameters as config.finetune trains them: with fresh
  LoRA adapters under `lora`, and the frozen leaves in `frozen_dtype`."""
  if tuning.method == "lora":
    params = {**params, lora.KEY: lora.init(params, tuning, jax.random.fold_in(rng, 1))}
  if tuning.method == "prefix":
    params = {**params, prefix.KEY: prefix.init(params, tuning, jax.random.fold_in(rng, 1))}
  if tuning.method == "prompt":
    params = {**params, prompt.KEY: prompt.init(params, tuning, jax.random.fold_in(rng, 1))}
  return finetuning.store_frozen(params, tuning)


class Layout(NamedTuple):
  """What a run builds from its config before any state exists."""

  mesh: Mesh
  model_cfg: ModelConfig
  model: nn.Module
  tx: optax.GradientTransformation
  init: Callable  # rng -> TrainState
  shardings: TrainState
  abstract: Any  # ShapeDtypeStructs with the shardings: the target of checkpoint restores.
  tuning: finetuning.Settings  # config.finetune: frozen leaves, LoRA adapters to merge.


def build_layout(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Layout:
  """The validated mesh (default: `config.mesh` over this host's devices), model, optimizer
  and state layout of `config`. Reads no data: enough for an ahead-of-time compile,
  generation and export."""
  mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
  model_cfg = validate(config, mesh)
  model = build_model(model_cfg)
  tuning = finetuning.Settings.from_config(config)
  trainable = functools.partial(finetuning.trainable_mask, settings=tuning)
  multipliers = None
  if model_cfg.parametrization != "standard":
    example = example_inputs(model_cfg, config.data.seq_len, config.data.source_len)
    boxed = jax.eval_shape(lambda r: model.init(r, *example)["params"], jax.random.key(0))
    multipliers = parametrization.lr_multipliers(model_cfg, boxed)
  tx = optim.make_optimizer(
    config.optim, config.train.steps, trainable if tuning.freezes else None, multipliers
  )
  return Layout(mesh, model_cfg, model, tx, *state_layout(model, tx, config, mesh), tuning)


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[TrainState, TrainState, Any]:
  """The train state built directly sharded (`jit(init, out_shardings=...)`): nothing is ever
  whole on one host. Returns (state, shardings, abstract state for checkpoint restores)."""
  init, shardings, abstract = state_layout(model, tx, config, mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  return state, shardings, abstract


def validate(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelConfig:
  """Checks that need more than one key; each failure names the setting and the fix."""
  model_cfg = ModelConfig.from_config(config.model)
  # "auto" attention: the kernel of the chips the step is compiled for (a TPU topology too).
  platform = mesh.devices.flat[0].platform
  model_cfg = dataclasses.replace(
    model_cfg, attention_impl=kernels.resolve(model_cfg.attention_impl, platform)
  )
  objectives.check(config)
  if config.data.seq_len > config.model.max_len:
    raise ValueError(
      f"config.data.seq_len={config.data.seq_len} exceeds config.model.max_len="
      f"{config.model.max_len}; raise max_len or shorten seq_len."
    )
  virtual = finetuning.Settings.from_config(config).virtual_tokens
  positions = config.data.seq_len + virtual
  if virtual and model_cfg.positions == "learned" and positions > model_cfg.max_len:
    raise ValueError(
      f"config.finetune.prefix_length={virtual} puts the tokens of "
      f"config.data.seq_len={config.data.seq_len} at positions up to {positions - 1}, past the "
      f"learned position table (config.model.max_len={model_cfg.max_len}); set seq_len to at "
      f"most {model_cfg.max_len - virtual}."
    )
  sharding.check_batch_size(config.train.batch_size, mesh)
  k = config.train.grad_accum_steps
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if k < 1 or config.train.batch_size % (k * shards):
    raise ValueError(
      f"config.train.grad_accum_steps={k} must split config.train.batch_size="
      f"{config.train.batch_size} into micro-batches that the {shards} batch shards "
      f"divide; use a batch size that is a multiple of {k * shards}."
    )
  if config.train.nan_policy not in ("stop", "skip"):
    raise ValueError(
      f"config.train.nan_policy={config.train.nan_policy!r} is not 'stop' or 'skip'."
    )
  chunk = config.loss.get("chunk_length", 0)
  if chunk < 0 or (chunk and config.loss.objective not in objectives.TOKENS):
    raise ValueError(
      f"config.loss.chunk_length={chunk} must be 0 (off) or a positive number of positions "
      "of a token objective (lm, mlm, seq2seq); set it to 0."
    )
  if config.loss.objective == "contrastive" and (config.train.engine != "jit" or k != 1):
    raise ValueError(
      "config.loss.objective='contrastive' scores every image against the whole global "
      f"batch's texts: set config.train.engine='jit' (it is {config.train.engine!r}) and "
      f"config.train.grad_accum_steps=1 (it is {k}: micro-batches would see fewer negatives)."
    )
  if config.train.eval_generate and config.loss.objective != "seq2seq":
    raise ValueError(
      f"config.train.eval_generate={config.train.eval_generate} decodes an encoder-decoder's "
      f"eval sources, but config.loss.objective is {config.loss.objective!r}; set it to 0."
    )
  for key in ("steps", "log_every", "eval_every", "checkpoint_every", "max_skipped_steps"):
    if config.train[key] <= 0:
      raise ValueError(f"config.train.{key} must be positive, got {config.train[key]}.")
  return model_cfg


# ---------------------------------------------------------------- tokenizer and data


def check_vocabulary(
  config: ml_collections.ConfigDict, tokenizer: tokenizers.Tokenizer | None
) -> None:
  """The model has an embedding row for each of the tokenizer's ids."""
  vocab = tokenizer.vocab_size if tokenizer is not None else 0
  if config.model.vocab_size < vocab:
    raise ValueError(
      f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
      f"{config.data.tokenizer!r} tokenizer's {vocab} ids; set it to at least {vocab}."
    )


def output_ids(
  config: ml_collections.ConfigDict, tokenizer: tokenizers.Tokenizer | None
) -> tuple[int, ...]:
  """config.loss.output_words as the tokenizer's ids, each word one token; () when unset."""
  words = config.loss.get("output_words", "").split()
  if not words:
    return ()
  if tokenizer is None or config.loss.chunk_length or config.loss.label_smoothing:
    raise ValueError(
      "config.loss.output_words needs a tokenizer, loss.chunk_length=0 and "
      "loss.label_smoothing=0 (smoothing would spread mass onto the excluded classes)."
    )
  ids = [tokenizer.encode(word) for word in words]
  bad = [w for w, i in zip(words, ids) if len(i) != 1 or tokenizer.decode(i).strip() != w]
  if bad:
    raise ValueError(
      f"config.loss.output_words: {bad[:5]} are not single tokens of the "
      f"{config.data.tokenizer!r} tokenizer; list words its vocabulary has."
    )
  return tuple(sorted({i[0] for i in ids}))


def zero_shot_prompts(
  config: ml_collections.ConfigDict, tokenizer: tokenizers.Tokenizer | None
) -> objectives.ZeroShot | None:
  """config.data.class_names x prompt_templates tokenized as captions are; None when unset."""
  d = config.data
  if config.loss.objective != "contrastive" or not d.get("class_names"):
    return None
  names = [n.strip() for n in d.class_names.split(",")]
  templates = [t.strip() for t in d.prompt_templates.split("|")]
  if not all("{}" in t for t in templates):
    raise ValueError(
      f"config.data.prompt_templates={d.prompt_templates!r}: every '|'-separated template "
      "needs a '{}' where the class name goes."
    )
  ids, mask = images.prompt_ids(tokenizer, names, templates, d.seq_len)
  nested = lambda a: tuple(map(nested, a)) if isinstance(a, list) else a  # noqa: E731
  return objectives.ZeroShot(ids=nested(ids.tolist()), mask=nested(mask.tolist()))


def prepare_data(config: ml_collections.ConfigDict) -> None:
  """With several processes, process 0 builds what the data needs on first use (a jtrans TFDS
  builder, a SentencePiece model) while the others wait, so that no two processes write it."""
  if jax.process_count() == 1:
    return
  error = None
  if jax.process_index() == 0:
    try:
      if config.loss.objective not in objectives.LABELLED_IMAGES:
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


def make_dataset(
  config: ml_collections.ConfigDict,
  train: bool,
  tokenizer: tokenizers.Tokenizer | None = None,
  fmt: chat.Format | None = None,
) -> grain.IterDataset:
  """The train or eval split as a grain dataset of global batches (`tokenizer` and the chat
  `fmt`: the run's, else config.data's are built).

  Every process reads the same stream (same seed, every document) and keeps the rows of its
  own devices (`Engine.place_batch`): the global batch of a step is a function of the step
  alone, so a run gives the same numbers on any number of hosts, and resumes on another.

  The batch format follows config.loss.objective: "lm"/"mlm" packed token rows
  (data/pipeline.py; "lm" with data.sampling="prompt_response": a row per pair, data/seq2seq.py;
  "chat": conversations, data/chat.py), "seq2seq" source/target pairs (data/seq2seq.py),
  "span_corruption" packed text rows corrupted into such pairs (data/span_corruption.py),
  "classification" and "diffusion" images and labels, "contrastive" images and captions
  (data/images.py).
  """
  d, kind = config.data, config.loss.objective
  common = dict(
    source=sources.from_config(d, train),
    batch_size=config.train.batch_size,
    seed=config.seed,
    train=train,
    worker_count=d.worker_count,
  )
  if kind == "contrastive":  # Images and captions; labels only to score zero-shot accuracy.
    return images.make_image_dataset(
      **common,
      image_key=d.image_key,
      label_key=d.label_key if d.class_names else "",
      options=images.ImageOptions.from_config(config),
      caption_key=d.caption_key,
      tokenizer=make_tokenizer(config) if tokenizer is None else tokenizer,
      seq_len=d.seq_len,
    )
  if kind in objectives.LABELLED_IMAGES:
    return images.make_image_dataset(
      **common,
      image_key=d.image_key,
      label_key=d.label_key,
      options=images.ImageOptions.from_config(config),
    )
  tokenizer = make_tokenizer(config) if tokenizer is None else tokenizer
  if kind == "lm" and d.sampling == "prompt_response":
    return seq2seq.make_prompt_response_dataset(
      **common,
      tokenizer=tokenizer,
      source_key=d.source_key,
      target_key=d.target_key,
      seq_len=d.seq_len,
      response_eos=d.response_eos,
    )
  if kind == "lm" and d.sampling == "chat":
    return chat.make_chat_dataset(
      **common,
      fmt=fmt or chat.make_format(d, tokenizer),
      keys=(d.messages_key, d.source_key, d.target_key),
      seq_len=d.seq_len,
    )
  if kind in ("lm", "mlm") and train and d.sampling == "windows":
    return pipeline.make_window_dataset(
      **{k: v for k, v in common.items() if k != "train"},
      tokenizer=tokenizer,
      text_key=d.text_key,
      seq_len=d.seq_len,
    )
  if kind in ("lm", "mlm"):
    return pipeline.make_lm_dataset(
      **common,
      name=d.name,
      split=d.train_split if train else d.eval_split,
      tokenizer=tokenizer,
      text_key=d.text_key,
      seq_len=d.seq_len,
      shuffle_window=d.shuffle_window,
      segment_ids=d.segment_ids,
    )
  if kind == "span_corruption":
    raw = span_corruption.check_lengths(
      source_len=d.source_len or d.seq_len,
      seq_len=d.seq_len,
      vocab_size=config.model.vocab_size,
      tokenizer_vocab=tokenizer.vocab_size,
      noise_density=config.loss.noise_density,
      mean_noise_span_length=config.loss.mean_noise_span_length,
    )
    raw_rows = pipeline.make_lm_dataset(
      **common,
      name=d.name,
      split=d.train_split if train else d.eval_split,
      tokenizer=tokenizer,
      text_key=d.text_key,
      seq_len=raw,
      shuffle_window=d.shuffle_window,
    )
    return raw_rows.map(
      span_corruption.CorruptRows(
        vocab_size=config.model.vocab_size,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        source_len=d.source_len or d.seq_len,
        target_len=d.seq_len,
        seed=config.seed,
        noise_density=config.loss.noise_density,
        mean_noise_span_length=config.loss.mean_noise_span_length,
      )
    )
  if kind == "seq2seq":
    return seq2seq.make_seq2seq_dataset(
      **common,
      tokenizer=tokenizer,
      source_key=d.source_key,
      target_key=d.target_key,
      source_len=d.source_len or d.seq_len,
      seq_len=d.seq_len,
    )
  raise ValueError(
    f"config.loss.objective={kind!r} has no data pipeline; use 'lm', 'mlm', "
    "'seq2seq', 'span_corruption', 'classification', 'contrastive' or 'diffusion'."
  )


# ---------------------------------------------------------------- the whole run


class Run(NamedTuple):
  """A run's parts, built once by `build` and handed to the loop, evaluation and sampling."""

  config: ml_collections.ConfigDict  # The run's record (config.json) and its cadences.
  layout: Layout
  tokenizer: tokenizers.Tokenizer | None  # None for image classification.
  chat_format: chat.Format | None  # data.sampling="chat": the template bound to the tokenizer.
  engine: Engine
  train_data: grain.IterDataset | None  # None when built for evaluation only.
  eval_data: grain.IterDataset
  # int32 [vocab]: UTF-8 bytes per token id, for bits per byte (lm objective); else None.
  token_bytes: np.ndarray | None = None


def build(config: ml_collections.ConfigDict, train_data: bool = True) -> Run:
  """Checks `config` (model, mesh, data, tokenizer) and builds every part of its run once
  (`train_data=False`: no train split, for evaluation). With several processes, process 0
  first prepares what the data needs (`prepare_data`)."""
  prepare_data(config)
  layout = build_layout(config)
  sources.check_config(config)  # Splits, fields, classes: before a tokenizer trains on them.
  labelled_images = config.loss.objective in objectives.LABELLED_IMAGES
  tokenizer = None if labelled_images else make_tokenizer(config)
  check_vocabulary(config, tokenizer)
  fmt = chat.format_of(config.data, tokenizer)
  engine = steps.make_engine(
    layout.model,
    layout.tx,
    config,
    layout.mesh,
    layout.shardings,
    output_ids(config, tokenizer),
    zero_shot_prompts(config, tokenizer),
  )
  return Run(
    config,
    layout,
    tokenizer,
    fmt,
    engine,
    make_dataset(config, True, tokenizer, fmt) if train_data else None,
    make_dataset(config, False, tokenizer, fmt),
    tokenizers.token_bytes(tokenizer) if config.loss.objective == "lm" and tokenizer else None,
  )
