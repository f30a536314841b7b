"""Autoregressive decoding: greedy, temperature, top-k and nucleus (top-p) sampling.

Decoder-only models continue left-padded prompts of different lengths (`left_pad` builds
them); encoder-decoder models decode from a start token given the source. Each call is one
compiled program: a prefill over the prompt, then a `lax.while_loop` of single-token steps
that read and extend the KV cache and stops once every row has emitted EOS.

`use_cache=False` re-runs the full forward pass over a fixed-size token buffer at every step
instead: the reference the cache is tested against, and the baseline of
benchmarks/decode_throughput.py. Beam search (jtrans/decoding/beam_search.py) uses the same `Stepper`s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jtrans.finetune import prefix


class Generated(NamedTuple):
  tokens: jax.Array  # int32 `[batch, max_new_tokens]`: generated tokens, pad after EOS.
  lengths: jax.Array  # int32 `[batch]`: generated tokens per row, the EOS included.


class Stepper(NamedTuple):
  """A model's decoding as the loops see it; `rows` is batch (x beams).

  state: what `step` carries: the KV cache, or the token buffer when not caching.
  logits: float32 `[rows, vocab]`, the logits of generated token 0 (after the prefill).
  step: `(state, tokens [rows], i) -> (state, logits [rows, vocab])`: feeds generated token
    i and returns the logits of token i + 1.
  reorder: `(state, rows [rows]) -> state` with row r taken from row `rows[r]` (beam search).
  """

  state: Any
  logits: jax.Array
  step: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]
  reorder: Callable[[Any, jax.Array], Any]


# ---------------------------------------------------------------- prompts and checks


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> (int32 `[batch, longest]` padded on the left, int32 lengths `[batch]`).

  Left padding puts every prompt's last token in the same column, where decoding starts.
  """
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.min(initial=1) < 1 or not len(prompts):
    raise ValueError("every prompt needs at least one token (e.g. the tokenizer's EOS as BOS).")
  tokens = np.full((len(prompts), lengths.max()), pad_id, np.int32)
  for row, prompt in zip(tokens, prompts):
    row[len(row) - len(prompt) :] = prompt
  return tokens, lengths


def check_length(model: nn.Module, prompt_len: int, max_new_tokens: int, what: str) -> None:
  """Fails, naming the settings, on no tokens to generate or on positions past the learned
  position table (config.model.max_len)."""
  if max_new_tokens < 1:
    raise ValueError(
      f"{what}: max_new_tokens={max_new_tokens} (config.sample.length or "
      "--max_new_tokens) must be at least 1."
    )
  needed, max_len = prompt_len + max_new_tokens - 1, model.cfg.max_len
  if model.cfg.positions == "learned" and needed > max_len:
    raise ValueError(
      f"{what}: the prompt ({prompt_len} tokens) plus max_new_tokens="
      f"{max_new_tokens} (config.sample.length or --max_new_tokens) need {needed} "
      f"positions but config.model.max_len={max_len} (the learned position "
      f"table); set config.sample.length (or --max_new_tokens) to at most "
      f"{max_len - prompt_len + 1}, or shorten the prompt."
    )


def _empty_cache(init: Callable[[], Any]) -> Any:
  """The "cache" collection of `init` as zeros, without running (or keeping) a parameter init."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(init))


def _reorder_cache(cache: Any, rows: jax.Array) -> Any:
  """Gathers the batch axis of every cache leaf: axis 1 under `nn.scan` (leaves gain a leading
  layers axis), else 0. Cross-attention keys and values are the same for every beam of a
  source, and the cache index and a ring's slots are counters: none of them moves."""

  def gather(path, x):
    names = [getattr(k, "key", None) for k in path]
    if names[-1] in ("cache_index", "cache_slots", "cached_cross_key", "cached_cross_value"):
      return x
    return jnp.take(x, rows, axis=1 if "layers" in names else 0)

  return jax.tree_util.tree_map_with_path(gather, cache)


def _take_rows(buffer: jax.Array, rows: jax.Array) -> jax.Array:
  return jnp.take(buffer, rows, axis=0)


# ---------------------------------------------------------------- steppers (call under jit)


def lm_stepper(
  model: nn.Module,
  params: Any,
  prompts: jax.Array,
  prompt_lengths: jax.Array,
  max_new_tokens: int,
  use_cache: bool = True,
) -> Stepper:
  """Decoder-only decoding of left-padded prompts `[rows, prompt_len]` (lengths `[rows]`).

  Row r's real tokens sit in slots `pad_r = prompt_len - length_r` onwards, at positions
  `slot - pad_r`: the padding is masked out of attention (kv_mask, or segment ids without
  the cache) and every row sees the positions it would see alone.
  """
  rows, prompt_len = prompts.shape
  slots = prompt_len + max_new_tokens - 1  # The last generated token is never fed back.
  pad = prompt_len - prompt_lengths.astype(jnp.int32)
  slot = jnp.arange(slots)
  # Prefix tuning's P learned keys and values come first: the tokens sit at P, P+1, ...
  positions = jnp.maximum(slot[None, :] - pad[:, None], 0) + prefix.offset(params)
  real = slot[None, :] >= pad[:, None]
  prompts = prompts.astype(jnp.int32)

  if not use_cache:

    def forward(buffer, index):
      logits = model.apply(
        {"params": params}, buffer, positions=positions, segment_ids=real.astype(jnp.int32)
      )
      return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False)

    def step(buffer, token, i):
      buffer = buffer.at[:, prompt_len + i].set(token)
      return buffer, forward(buffer, prompt_len + i)

    buffer = jnp.zeros((rows, slots), jnp.int32).at[:, :prompt_len].set(prompts)
    return Stepper(buffer, forward(buffer, prompt_len - 1), step, _take_rows)

  kv_mask = real[:, None, None, :]

  def last_logits(module, tokens, **kwargs):
    # Only the last position's logits are sampled from: projecting the prompt's other
    # positions onto the vocabulary is a third of a GPT-2-small prefill's FLOPs at 512 tokens.
    return module.project(module(tokens, hidden=True, **kwargs)[:, -1:])[:, 0]

  def apply(cache, tokens, pos):
    logits, mutated = model.apply(
      {"params": params, "cache": cache},
      tokens,
      method=last_logits,
      positions=pos,
      decode=True,
      kv_mask=kv_mask,
      mutable=["cache"],
    )
    return mutated["cache"], logits

  def step(cache, token, i):
    return apply(
      cache, token[:, None], jax.lax.dynamic_slice_in_dim(positions, prompt_len + i, 1, axis=1)
    )

  cache = _empty_cache(
    lambda: model.init(jax.random.key(0), jnp.zeros((rows, slots), jnp.int32), decode=True)["cache"]
  )
  cache, logits = apply(cache, prompts, positions[:, :prompt_len])
  return Stepper(cache, logits, step, _reorder_cache)


def seq2seq_stepper(
  model: nn.Module,
  params: Any,
  source: jax.Array,
  source_mask: jax.Array,
  start_id: int,
  max_new_tokens: int,
  use_cache: bool = True,
  beams: int = 1,
) -> Stepper:
  """Encoder-decoder decoding of `source` `[batch, source_len]` (mask 1 on real tokens) from
  the decoder start token at position 0; rows are batch x beams, each source repeated `beams`
  times after encoding it once."""
  encoded = model.apply({"params": params}, source, source_mask, method=model.encode)
  encoded, source_mask = jnp.repeat(encoded, beams, 0), jnp.repeat(source_mask, beams, 0)
  rows = encoded.shape[0]
  length = max_new_tokens  # The start token and every generated token but the last.

  if not use_cache:

    def forward(buffer, index):
      logits = model.apply(
        {"params": params}, None, buffer, encoder_mask=source_mask, encoded=encoded
      )
      return jax.lax.dynamic_index_in_dim(logits, index, axis=1, keepdims=False)

    def step(buffer, token, i):
      buffer = buffer.at[:, i + 1].set(token)
      return buffer, forward(buffer, i + 1)

    buffer = jnp.zeros((rows, length), jnp.int32).at[:, 0].set(start_id)
    return Stepper(buffer, forward(buffer, 0), step, _take_rows)

  def apply(cache, tokens, position, context=None):
    logits, mutated = model.apply(
      {"params": params, "cache": cache},
      None,
      tokens,
      encoder_mask=source_mask,
      encoded=context,
      positions=jnp.full((rows, 1), position, jnp.int32),
      decode=True,
      mutable=["cache"],
    )
    return mutated["cache"], logits[:, -1]

  cache = _empty_cache(
    lambda: model.init(
      jax.random.key(0),
      jnp.zeros(source_mask.shape, jnp.int32),
      jnp.zeros((rows, length), jnp.int32),
      encoder_mask=source_mask,
      decode=True,
    )["cache"]
  )
  # The first call passes the encoder output: each layer caches its cross-attention keys.
  cache, logits = apply(cache, jnp.full((rows, 1), start_id, jnp.int32), 0, encoded)
  return Stepper(
    cache, logits, lambda cache, token, i: apply(cache, token[:, None], i + 1), _reorder_cache
  )


# ---------------------------------------------------------------- choosing the next token


def filter_logits(
  logits: jax.Array, *, top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0
) -> jax.Array:
  """`[..., vocab]` logits with -inf outside the top k and outside the nucleus.

  top_k keeps the k largest (ties with the k-th included, as Hugging Face does); 0 keeps all.
  top_p keeps the smallest set of most likely tokens whose probability reaches p (Holtzman
  et al. 2019), the mass computed after the top-k cut; 1.0 keeps all. Both may be traced:
  `lax.cond` skips each sort when its cut is off.
  """
  vocab = logits.shape[-1]

  def cut_k(logits):
    k = jnp.clip(top_k, 1, vocab)
    kth = jnp.take(jnp.sort(logits, axis=-1), vocab - k, axis=-1)[..., None]
    return jnp.where(logits < kth, -jnp.inf, logits)

  def cut_p(logits):
    order = jnp.argsort(-logits, axis=-1)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    # Token j (in sorted order) is needed while the mass before it is still short of p.
    keep_sorted = jnp.cumsum(probs, axis=-1) - probs < top_p
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)

  logits = jax.lax.cond(jnp.asarray(top_k) > 0, cut_k, lambda x: x, logits)
  return jax.lax.cond(jnp.asarray(top_p) < 1.0, cut_p, lambda x: x, logits)


def sample_logits(
  key: jax.Array,
  logits: jax.Array,
  *,
  temperature: float | jax.Array = 1.0,
  top_k: int | jax.Array = 0,
  top_p: float | jax.Array = 1.0,
) -> jax.Array:
  """Next tokens `[...]` from logits `[..., vocab]`: argmax when temperature is 0, else a
  sample of softmax(filtered logits / temperature) (temperature first, as Hugging Face)."""

  def draw(logits):
    logits = filter_logits(logits / jnp.maximum(temperature, 1e-6), top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)

  greedy = lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.lax.cond(jnp.asarray(temperature) > 0, draw, greedy, logits)


class Sampling(NamedTuple):
  """How the next token is chosen; traced, so changing them does not recompile."""

  temperature: jax.Array  # 0: greedy.
  top_k: jax.Array  # 0: no cut.
  top_p: jax.Array  # 1.0: no cut.
  eos_id: jax.Array  # -1: none.
  pad_id: jax.Array

  @classmethod
  def make(
    cls, temperature: float, top_k: int, top_p: float, eos_id: int | None, pad_id: int
  ) -> Sampling:
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
      raise ValueError(
        f"temperature={temperature}, top_k={top_k}, top_p={top_p}: need "
        "temperature >= 0, top_k >= 0 and 0 < top_p <= 1 (config.sample)."
      )
    return cls(
      jnp.float32(temperature),
      jnp.int32(top_k),
      jnp.float32(top_p),
      jnp.int32(-1 if eos_id is None else eos_id),
      jnp.int32(pad_id),
    )


def _sample_loop(
  stepper: Stepper, rng: jax.Array, sampling: Sampling, max_new_tokens: int
) -> Generated:
  rows = stepper.logits.shape[0]
  s = sampling

  def pick(logits, i, done, lengths, tokens):
    token = sample_logits(
      jax.random.fold_in(rng, i), logits, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p
    )
    token = jnp.where(done, s.pad_id, token)
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | (token == s.eos_id)
    return token, done, lengths, tokens.at[:, i].set(token)

  def body(carry):
    i, state, token, done, lengths, tokens = carry
    state, logits = stepper.step(state, token, i - 1)
    return (i + 1, state, *pick(logits, i, done, lengths, tokens))

  def cond(carry):
    return (carry[0] < max_new_tokens) & ~jnp.all(carry[3])

  first = pick(
    stepper.logits,
    0,
    jnp.zeros((rows,), bool),
    jnp.zeros((rows,), jnp.int32),
    jnp.full((rows, max_new_tokens), s.pad_id, jnp.int32),
  )
  *_, lengths, tokens = jax.lax.while_loop(cond, body, (jnp.int32(1), stepper.state, *first))
  return Generated(tokens, lengths)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "use_cache"))
def _generate(model, params, prompts, prompt_lengths, rng, sampling, *, max_new_tokens, use_cache):
  stepper = lm_stepper(model, params, prompts, prompt_lengths, max_new_tokens, use_cache)
  return _sample_loop(stepper, rng, sampling, max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "start_id", "max_new_tokens", "use_cache"))
def _generate_seq2seq(
  model, params, source, source_mask, rng, sampling, *, start_id, max_new_tokens, use_cache
):
  stepper = seq2seq_stepper(model, params, source, source_mask, start_id, max_new_tokens, use_cache)
  return _sample_loop(stepper, rng, sampling, max_new_tokens)


def generate(
  model: nn.Module,
  params: Any,
  prompts: jax.Array,
  prompt_lengths: jax.Array,
  rng: jax.Array | None = None,
  *,
  max_new_tokens: int,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
  pad_id: int = 0,
  use_cache: bool = True,
) -> Generated:
  """Continues each prompt of a decoder-only model by up to `max_new_tokens` tokens.

  Args:
    prompts: int `[batch, prompt_len]`, padded on the left (`left_pad`).
    prompt_lengths: int `[batch]`, real tokens per row (each >= 1).
    rng: a key for sampling (unused when greedy; None: key 0).
    temperature: 0 is greedy; else samples softmax(logits / temperature) after the cuts.
    top_k, top_p: keep the k most likely tokens (0: all) / the nucleus of mass p (1.0: all).
    eos_id: a row that emits it is finished: it emits pad_id from then on, and the loop
      stops once every row is finished. None: always `max_new_tokens` tokens.
    use_cache: False re-runs the whole model over a token buffer each step (reference).
  Returns:
    `Generated(tokens [batch, max_new_tokens], lengths [batch])`.
  Compiles once per model, shapes, max_new_tokens and use_cache; the sampling settings are
  traced (changing them does not recompile).
  """
  # A prefix's keys and values take the first positions (prefix tuning).
  check_length(model, prompts.shape[1] + prefix.offset(params), max_new_tokens, "generate")
  sampling = Sampling.make(temperature, top_k, top_p, eos_id, pad_id)
  rng = jax.random.key(0) if rng is None else rng
  return _generate(
    model,
    params,
    jnp.asarray(prompts, jnp.int32),
    jnp.asarray(prompt_lengths, jnp.int32),
    rng,
    sampling,
    max_new_tokens=max_new_tokens,
    use_cache=use_cache,
  )


def generate_seq2seq(
  model: nn.Module,
  params: Any,
  source: jax.Array,
  source_mask: jax.Array | None,
  rng: jax.Array | None = None,
  *,
  start_id: int,
  max_new_tokens: int,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
  pad_id: int = 0,
  use_cache: bool = True,
) -> Generated:
  """Decodes an encoder-decoder model from `start_id` for each source row.

  Args:
    source: int `[batch, source_len]`; source_mask: `[batch, source_len]`, 1 on real tokens
      (None: all real).
    start_id: the decoder start token (position 0; Marian: the pad id, T5: 0).
    The rest as `generate`.
  Returns:
    `Generated(tokens [batch, max_new_tokens], lengths [batch])`, the start token excluded.
  """
  check_length(model, 1, max_new_tokens, "generate_seq2seq")  # The start token.
  source = jnp.asarray(source, jnp.int32)
  source_mask = (
    jnp.ones_like(source) if source_mask is None else jnp.asarray(source_mask, jnp.int32)
  )
  sampling = Sampling.make(temperature, top_k, top_p, eos_id, pad_id)
  rng = jax.random.key(0) if rng is None else rng
  return _generate_seq2seq(
    model,
    params,
    source,
    source_mask,
    rng,
    sampling,
    start_id=start_id,
    max_new_tokens=max_new_tokens,
    use_cache=use_cache,
  )
