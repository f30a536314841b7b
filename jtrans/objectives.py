"""The training objectives: how a batch becomes logits, targets and weights.

Every objective ends in the same token (or image) cross-entropy of `losses.py`, so one train
step serves them all. Batches (dicts of arrays, `[batch, length]` unless noted):
- "lm" (decoder): `inputs`, `targets` (inputs shifted left), `weights`; optional `positions`
  and `segment_ids` for packed rows.
- "mlm" (encoder): the LM rows; `mask_tokens` chooses the positions to predict (BERT's 15%:
  80% replaced by the mask id, 10% by a random token, 10% kept).
- "seq2seq" (encoder_decoder): `encoder_inputs` `[batch, source_length]`, `encoder_mask`,
  decoder `inputs` (targets shifted right after the start id), `targets`, `weights`.
- "span_corruption" (encoder_decoder): T5's pre-training; "seq2seq"'s batches, made from
  plain text by `data/span_corruption.py` (sentinels take the vocabulary's last ids).
- "classification" (vit): `images` `[batch, height, width, channels]`, `targets` and
  `weights` `[batch]`.
- "contrastive" (clip): `images`, captions `texts` and `text_mask` `[batch, length]`,
  `targets` (labels, for zero-shot evaluation) and `weights` `[batch]`; the loss is
  `losses.contrastive` over the whole batch (not a sum of per-row terms).
- "diffusion" (dit): `images`, `targets` (class labels) and `weights` `[batch]`; `prepare`
  draws each image's timestep and noise (and drops its label to the null class at
  config.loss.class_dropout), the model predicts the noise (`losses.noise_mse`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrans import diffusion
from jtrans.finetune import prefix
from jtrans.models import ModelConfig, layers

Batch = dict[str, jax.Array]
SEQ2SEQ = ("seq2seq", "span_corruption")  # The objectives that feed encoder-decoder pairs.
TOKENS = ("lm", "mlm", *SEQ2SEQ)  # The objectives whose outputs are token logits.
LABELLED_IMAGES = ("classification", "diffusion")  # Images and labels; no tokenizer.

FAMILY_OF = {
  "lm": "decoder",
  "mlm": "encoder",
  "seq2seq": "encoder_decoder",
  "span_corruption": "encoder_decoder",
  "classification": "vit",
  "contrastive": "clip",
  "diffusion": "dit",
}


def check(config: ml_collections.ConfigDict) -> None:
  """The objective exists and suits the model family; the error names both settings."""
  objective, family = config.loss.objective, config.model.family
  if objective not in FAMILY_OF:
    raise ValueError(f"config.loss.objective={objective!r} is not one of {sorted(FAMILY_OF)}.")
  if FAMILY_OF[objective] != family:
    raise ValueError(
      f"config.loss.objective={objective!r} trains a {FAMILY_OF[objective]!r} model, "
      f"but config.model.family={family!r}; set one to match the other."
    )


def mask_tokens(
  batch: Batch, rng: jax.Array, *, rate: float, mask_id: int, vocab_size: int
) -> Batch:
  """BERT's masked-LM corruption of `batch["inputs"]`.

  Each real token is chosen with probability `rate`; a chosen token becomes `mask_id` (80%),
  a uniformly random token (10%) or stays (10%). Returns the batch with the corrupted
  `inputs`, `targets` = the original tokens, and `weights` = 1 exactly on chosen tokens.
  """
  tokens = batch["inputs"]
  real = batch["segment_ids"] > 0 if "segment_ids" in batch else batch["weights"] > 0
  choose_key, action_key, random_key = jax.random.split(rng, 3)
  chosen = (jax.random.uniform(choose_key, tokens.shape) < rate) & real
  action = jax.random.uniform(action_key, tokens.shape)
  random_tokens = jax.random.randint(random_key, tokens.shape, 0, vocab_size, tokens.dtype)
  corrupted = jnp.where(
    chosen & (action < 0.8), mask_id, jnp.where(chosen & (action < 0.9), random_tokens, tokens)
  )
  return {
    **batch,
    "inputs": corrupted.astype(tokens.dtype),
    "targets": tokens,
    "weights": chosen.astype(jnp.float32),
  }


@dataclasses.dataclass(frozen=True)
class Masking:
  """BERT's corruption settings (config.loss.mask_rate, mask_token_id; the model's vocabulary)."""

  rate: float
  mask_id: int
  vocab_size: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Masking | None:
    """The masked-LM objective's settings; None for every other objective."""
    if config.loss.objective != "mlm":
      return None
    return cls(config.loss.mask_rate, config.loss.mask_token_id, config.model.vocab_size)


@dataclasses.dataclass(frozen=True)
class Noising:
  """The diffusion objective's forward process (config.loss.noise_schedule, diffusion_steps,
  class_dropout; the null class is config.model.num_classes)."""

  schedule: diffusion.Schedule
  class_dropout: float
  null_label: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Noising | None:
    """The diffusion objective's settings; None for every other objective."""
    if config.loss.objective != "diffusion":
      return None
    schedule = diffusion.make_schedule(config.loss.noise_schedule, config.loss.diffusion_steps)
    return cls(schedule, config.loss.class_dropout, config.model.num_classes)


def add_noise(batch: Batch, rng: jax.Array, noising: Noising) -> Batch:
  """A diffusion training batch: per image a timestep uniform in [0, T), Gaussian noise, the
  noised image and its label (the null class with probability class_dropout). Adds `noisy`,
  `timesteps`, `noise` and `labels` to the batch."""
  images = batch["images"]
  rows = images.shape[0]
  t_key, noise_key, drop_key = jax.random.split(rng, 3)
  timesteps = jax.random.randint(t_key, (rows,), 0, noising.schedule.steps)
  noise = jax.random.normal(noise_key, images.shape, jnp.float32)
  dropped = jax.random.uniform(drop_key, (rows,)) < noising.class_dropout
  return {
    **batch,
    "noisy": diffusion.add_noise(images, timesteps, noise, noising.schedule),
    "timesteps": timesteps,
    "noise": noise,
    "labels": jnp.where(dropped, noising.null_label, batch["targets"]).astype(jnp.int32),
  }


def prepare(
  batch: Batch, rng: jax.Array, masking: Masking | None, noising: Noising | None = None
) -> Batch:
  """The batch the model and loss see: masked for "mlm" (`masking` given), noised for
  "diffusion" (`noising` given), else unchanged."""
  if noising is not None:
    return add_noise(batch, rng, noising)
  if masking is None:
    return batch
  return mask_tokens(
    batch, rng, rate=masking.rate, mask_id=masking.mask_id, vocab_size=masking.vocab_size
  )


def logits(
  model: nn.Module,
  params: Any,
  batch: Batch,
  objective: str,
  deterministic: bool,
  rngs: dict | None = None,
  hidden: bool = False,
) -> jax.Array:
  """float32 logits aligned with `batch["targets"]` (plus a vocabulary or class axis); with
  `hidden` (token objectives only), the hidden states `[batch, length, embed]` that `project`
  turns into those logits. "contrastive": (image embeddings, text embeddings, log scale, bias);
  "diffusion": the predicted noise, shaped as the images."""
  variables = {"params": params}
  if objective in ("lm", "mlm"):
    positions = batch.get("positions")
    if shift := prefix.offset(params):  # Prefix tuning: the tokens follow the prefix's P.
      positions = shift + layers.default_positions(batch["inputs"], positions)
    return model.apply(
      variables,
      batch["inputs"],
      positions=positions,
      segment_ids=batch.get("segment_ids"),
      deterministic=deterministic,
      rngs=rngs,
      hidden=hidden,
    )
  if objective in SEQ2SEQ:
    return model.apply(
      variables,
      batch["encoder_inputs"],
      batch["inputs"],
      encoder_mask=batch.get("encoder_mask"),
      deterministic=deterministic,
      rngs=rngs,
      hidden=hidden,
    )
  if objective == "classification":
    return model.apply(variables, batch["images"], deterministic=deterministic, rngs=rngs)
  if objective == "diffusion":  # The predicted noise.
    return model.apply(
      variables,
      batch["noisy"],
      batch["timesteps"],
      batch["labels"],
      deterministic=deterministic,
      rngs=rngs,
    )
  if objective == "contrastive":  # (image embeddings, text embeddings, log scale, bias)
    return model.apply(
      variables,
      batch["images"],
      batch["texts"],
      batch.get("text_mask"),
      deterministic=deterministic,
      rngs=rngs,
    )
  raise ValueError(f"config.loss.objective={objective!r} is not one of {sorted(FAMILY_OF)}.")


@dataclasses.dataclass(frozen=True)
class ZeroShot:
  """Zero-shot classification prompts (`images.prompt_ids`), as nested tuples so that a step
  can close over them: `ids` and `mask` `[classes][templates][length]`."""

  ids: tuple
  mask: tuple


def zero_shot_correct(
  model: nn.Module, params: Any, image_embeds: jax.Array, prompts: ZeroShot, targets: jax.Array
) -> jax.Array:
  """1.0 where an image's nearest class is its label, `[batch]`: each class embedded as the
  normalised mean of its templates' unit text embeddings (Radford et al.'s prompt ensemble)."""
  ids, mask = jnp.asarray(prompts.ids), jnp.asarray(prompts.mask)
  classes, templates, length = ids.shape
  texts = model.apply(
    {"params": params},
    ids.reshape(-1, length),
    mask.reshape(-1, length),
    method="encode_text",
  )
  class_embeds = texts.reshape(classes, templates, -1).mean(axis=1)
  class_embeds = class_embeds / jnp.linalg.norm(class_embeds, axis=-1, keepdims=True)
  nearest = jnp.argmax(image_embeds @ class_embeds.T, axis=-1)
  return (nearest == targets).astype(jnp.float32)


def project(model: nn.Module, params: Any, hidden: jax.Array) -> jax.Array:
  """The token models' output layer: hidden states `[batch, length, embed]` -> float32 logits."""
  return model.apply({"params": params}, hidden, method="project")


def batch_spec(
  config: ml_collections.ConfigDict, cfg: ModelConfig
) -> dict[str, tuple[tuple[int, ...], str]]:
  """{key: (shape, dtype)} of the global batch `make_dataset` yields for config.loss.objective,
  so a step can be compiled (`aot.py`) without any data."""
  d, rows = config.data, config.train.batch_size
  tokens = ((rows, d.seq_len), "int32")
  weights = ((rows, d.seq_len), "float32")
  objective = config.loss.objective
  if objective in ("lm", "mlm"):
    spec = {"inputs": tokens, "targets": tokens, "weights": weights}
    if d.segment_ids or d.sampling == "chat":  # Chat rows are packed conversations.
      spec |= {"segment_ids": tokens, "positions": tokens}
    return spec
  if objective in SEQ2SEQ:
    source = (rows, d.source_len or d.seq_len)
    return {
      "encoder_inputs": (source, "int32"),
      "encoder_mask": (source, "float32"),
      "inputs": tokens,
      "targets": tokens,
      "weights": weights,
    }
  if objective == "classification":
    image = (rows, cfg.image_size, cfg.image_size, cfg.num_channels)
    spec = {
      "images": (image, "float32"),
      "targets": ((rows,), "int32"),
      "weights": ((rows,), "float32"),
    }
    if d.mixup > 0:  # Training batches (jtrans.data.images.mixup).
      spec |= {"mixed_targets": ((rows,), "int32"), "mix": ((rows,), "float32")}
    return spec
  if objective == "diffusion":
    image = (rows, cfg.image_size, cfg.image_size, cfg.num_channels)
    return {
      "images": (image, "float32"),
      "targets": ((rows,), "int32"),
      "weights": ((rows,), "float32"),
    }
  if objective == "contrastive":
    image = (rows, cfg.image_size, cfg.image_size, cfg.num_channels)
    return {
      "images": (image, "float32"),
      "texts": tokens,
      "text_mask": tokens,
      "targets": ((rows,), "int32"),
      "weights": ((rows,), "float32"),
    }
  raise ValueError(f"config.loss.objective={objective!r} is not one of {sorted(FAMILY_OF)}.")


def positions_per_example(config: ml_collections.ConfigDict, cfg: ModelConfig) -> int:
  """Positions the model processes per example (for tokens/s and MFU)."""
  d = config.data
  if config.loss.objective in SEQ2SEQ:
    return (d.source_len or d.seq_len) + d.seq_len
  if config.loss.objective == "classification":
    return cfg.num_patches + (cfg.pool == "cls")
  if config.loss.objective == "diffusion":
    return cfg.num_patches
  if config.loss.objective == "contrastive":  # An image's patches and its caption's tokens.
    return cfg.num_patches + (cfg.pool == "cls") + d.seq_len
  return d.seq_len
