"""T5's span corruption (Raffel et al. 2020, section 3.1.4): pure numpy on token ids.

A stretch of tokens is cut into alternating non-noise and noise spans (starting with
non-noise), ``round(noise_density * length)`` noise tokens in
``round(noise / mean_noise_span_length)`` spans of random lengths (each at least 1). The
encoder input keeps the non-noise tokens with one sentinel where each noise span was; the
target is the inverse, a sentinel for each non-noise span, so each sentinel is followed by the
span it stands for:

  tokens  = The  cute dog  walks  in the  park
  inputs  = The  <0>       walks  <1>     park  EOS      (<k> = sentinel k, id vocab_size - 1 - k)
  targets = <0>  cute dog  <1>    in the  <2>   EOS

as T5's ``random_spans_noise_mask`` and ``noise_span_to_unique_sentinel`` do (its sentinels
are the vocabulary's last ids, ``<extra_id_0>`` = vocab_size - 1). ``lengths`` gives the raw
length whose corrupted input fills ``inputs_length`` exactly (T5's ``random_spans_helper``).
"""

from __future__ import annotations

import zlib

import numpy as np


def lengths(
  inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
  """(raw tokens per example, target length) for encoder inputs of ``inputs_length`` (EOS
  included): the longest raw stretch whose corrupted input still fits."""

  def corrupted(tokens_length: int) -> tuple[int, int]:
    noise = int(round(tokens_length * noise_density))
    spans = int(round(noise / mean_noise_span_length))
    return tokens_length - noise + spans + 1, noise + spans + 1  # + EOS each.

  tokens_length = inputs_length - 1
  while corrupted(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  return tokens_length, corrupted(tokens_length)[1]


def _random_segmentation(items: int, segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths of ``segments`` consecutive non-empty pieces of ``items`` items, uniformly."""
  cuts = np.sort(rng.choice(np.arange(1, items), size=segments - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [items]]))


def _noise_and_spans(
  length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
  """(noise tokens, noise spans) of ``noise_mask`` for ``length`` tokens (length >= 2)."""
  noise = min(max(int(round(length * noise_density)), 1), length - 1)
  spans = max(int(round(noise / mean_noise_span_length)), 1)
  return noise, min(spans, noise, length - noise)  # Every span of either kind holds a token.


def noise_mask(
  length: int,
  rng: np.random.Generator,
  noise_density: float = 0.15,
  mean_noise_span_length: float = 3.0,
) -> np.ndarray:
  """bool ``[length]``, True on noise tokens: non-noise span, noise span, ... (T5's layout)."""
  if length < 2:
    raise ValueError(f"span corruption needs at least 2 tokens per example, got {length}.")
  noise, spans = _noise_and_spans(length, noise_density, mean_noise_span_length)
  noise_lengths = _random_segmentation(noise, spans, rng)
  keep_lengths = _random_segmentation(length - noise, spans, rng)
  pieces = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], spans), pieces)


def sentinel_ids(count: int, vocab_size: int) -> np.ndarray:
  """T5's sentinels: ``<extra_id_k>`` is ``vocab_size - 1 - k``."""
  return vocab_size - 1 - np.arange(count)


def _spans_to_sentinels(tokens: np.ndarray, marked: np.ndarray, vocab_size: int) -> np.ndarray:
  """``tokens`` with each run of ``marked`` tokens replaced by one sentinel, in order."""
  starts = marked & ~np.concatenate([[False], marked[:-1]])
  sentinels = sentinel_ids(int(starts.sum()), vocab_size)[np.maximum(np.cumsum(starts) - 1, 0)]
  return np.where(starts, sentinels, tokens)[~marked | starts].astype(np.int32)


def corrupt(
  tokens: np.ndarray, mask: np.ndarray, vocab_size: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets), int32, each ending with ``eos_id``, from ``tokens [length]`` and its
  noise ``mask``: the inputs put a sentinel for each noise span, the targets one for each
  non-noise span (T5's ``noise_span_to_unique_sentinel`` on the mask and its inverse), so with
  non-noise first, sentinel k replaces noise span k in the inputs and precedes it in the
  targets."""
  tokens, mask, eos = np.asarray(tokens, np.int32), np.asarray(mask, bool), [eos_id]
  inputs = _spans_to_sentinels(tokens, mask, vocab_size)
  targets = _spans_to_sentinels(tokens, ~mask, vocab_size)
  return np.concatenate([inputs, eos]).astype(np.int32), np.concatenate([targets, eos]).astype(
    np.int32
  )


def reconstruct(
  inputs: np.ndarray, targets: np.ndarray, vocab_size: int, eos_id: int
) -> np.ndarray:
  """The original tokens from a ``corrupt`` pair: each sentinel in ``inputs`` replaced by what
  follows it in ``targets`` up to the next sentinel (the inverse, for tests and inspection).
  Real token ids must stay below the sentinels (``vocab_size`` - the number of spans)."""
  inputs, targets = list(np.asarray(inputs)), list(np.asarray(targets))
  # Up to the last EOS: packed text keeps documents' EOS ids inside a row.
  last = lambda ids: len(ids) - 1 - ids[::-1].index(eos_id)
  inputs, targets = inputs[: last(inputs)], targets[: last(targets)]
  first_sentinel = vocab_size - len(inputs)  # There are fewer spans than input tokens.
  spans, current = {}, None
  for t in targets:
    if t >= first_sentinel:
      current = spans[t] = []
    else:
      current.append(t)
  out = []
  for t in inputs:
    out.extend(spans[t] if t >= first_sentinel else [t])
  return np.asarray(out, np.int32)


# ---------------------------------------------------------------- the data pipeline


def max_spans(raw_length: int, noise_density: float, mean_noise_span_length: float) -> int:
  """Noise spans in a full row of ``raw_length`` tokens: the sentinels it uses (``noise_mask``'s
  count, which shorter rows do not exceed)."""
  return _noise_and_spans(raw_length, noise_density, mean_noise_span_length)[1]


class CorruptRows:
  """Batch of raw token rows (``make_lm_dataset``'s: ``inputs``, ``weights``) -> a seq2seq
  batch of corrupted pairs (``data/seq2seq.py``'s format: ``encoder_inputs``,
  ``encoder_mask`` ``[rows, source_len]``; ``inputs``, ``targets``, ``weights``
  ``[rows, target_len]``).

  A row's noise mask is drawn from ``seed`` and the row's tokens, so it is the same however
  the stream is split among hosts or resumed, and new every epoch (the packed rows move by a
  seeded offset each epoch). Rows of fewer than 2 real tokens (eval padding) get weight 0.
  """

  def __init__(
    self,
    *,
    vocab_size: int,
    eos_id: int,
    pad_id: int,
    source_len: int,
    target_len: int,
    seed: int,
    noise_density: float,
    mean_noise_span_length: float,
  ):
    self.vocab_size, self.eos_id, self.pad_id = vocab_size, eos_id, pad_id
    self.source_len, self.target_len, self.seed = source_len, target_len, seed
    self.noise = (noise_density, mean_noise_span_length)

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = batch["inputs"].shape[0]
    out = {
      "encoder_inputs": np.full((rows, self.source_len), self.pad_id, np.int32),
      "encoder_mask": np.zeros((rows, self.source_len), np.float32),
      "inputs": np.full((rows, self.target_len), self.pad_id, np.int32),
      "targets": np.full((rows, self.target_len), self.pad_id, np.int32),
      "weights": np.zeros((rows, self.target_len), np.float32),
    }
    for r in range(rows):
      tokens = np.asarray(batch["inputs"][r][batch["weights"][r] > 0], np.int32)
      if len(tokens) < 2:
        continue
      rng = np.random.default_rng([self.seed, zlib.crc32(tokens.tobytes())])
      mask = noise_mask(len(tokens), rng, *self.noise)
      source, target = corrupt(tokens, mask, self.vocab_size, self.eos_id)
      source, target = source[: self.source_len], target[: self.target_len]
      out["encoder_inputs"][r, : len(source)] = source
      out["encoder_mask"][r, : len(source)] = 1.0
      out["targets"][r, : len(target)] = target
      out["inputs"][r, 1 : len(target)] = target[:-1]
      out["weights"][r, : len(target)] = 1.0
    return out


def check_lengths(
  *,
  source_len: int,
  seq_len: int,
  vocab_size: int,
  tokenizer_vocab: int,
  noise_density: float,
  mean_noise_span_length: float,
) -> int:
  """The raw tokens per row for encoder inputs of ``source_len``; raises, naming the setting,
  when the targets do not fit ``seq_len`` or the sentinels overlap the tokenizer's ids."""
  raw, target = lengths(source_len, noise_density, mean_noise_span_length)
  if seq_len < target:
    raise ValueError(
      f"span corruption of {raw} raw tokens (config.data.source_len={source_len}) makes "
      f"targets of {target} tokens; set config.data.seq_len to at least {target}."
    )
  needed = tokenizer_vocab + max_spans(raw, noise_density, mean_noise_span_length)
  if vocab_size < needed:
    raise ValueError(
      f"span corruption's sentinels take the last ids of config.model.vocab_size={vocab_size}, "
      f"which overlap the tokenizer's {tokenizer_vocab} ids; set config.model.vocab_size to at "
      f"least {needed} (ByT5: 384 for bytes)."
    )
  return raw
