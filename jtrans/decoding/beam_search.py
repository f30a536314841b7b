"""Beam search with a length penalty, for encoder-decoder and decoder-only models.

The search is Hugging Face's (transformers 5.x `_beam_search`), so that with
`length_penalty_style="hf"` it returns exactly what `generate(num_beams=k, do_sample=False)`
returns. Each step:
  1. every running beam's log-probabilities plus its score give batch x (beams x vocab)
     candidates, of which the best 2 x beams are kept (so that beams remain even if the best
     ones all end);
  2. the best `beams` of those that did not just end (EOS, or the last step) run on;
  3. those among the best `beams` candidates that did end are scored, `log_prob / penalty(length)`
     with length = generated tokens (the EOS included, the decoder start or prompt excluded),
     and merged into the `beams` best finished hypotheses.
A source stops taking hypotheses once its best running beam, scored at the current length
(or at max_new_tokens with early_stopping="never"), cannot beat its worst finished one; the
loop stops when no source can improve, or after max_new_tokens.

Length penalties: "gnmt" divides by ((5 + length) / 6) ** alpha (Wu et al. 2016, GNMT, alpha
0.6-0.7 there); "hf" divides by length ** alpha (Hugging Face's `length_penalty`, default 1.0).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jtrans.decoding import sampling
from jtrans.finetune import prefix

STYLES = ("gnmt", "hf")
NEG = -1.0e9  # Hugging Face's "impossible" score; the same constant keeps ties the same.


class Beams(NamedTuple):
  tokens: jax.Array  # int32 `[batch, beams, max_new_tokens]`, best first; pad after the end.
  lengths: jax.Array  # int32 `[batch, beams]`: generated tokens, the EOS included.
  scores: jax.Array  # float32 `[batch, beams]`: penalised log-probabilities.


def penalties(style: str, alpha: float, max_new_tokens: int) -> np.ndarray:
  """float32 `[max_new_tokens + 1]`: the divisor of a hypothesis of each length (computed in
  float64 and rounded once, as Python computes Hugging Face's)."""
  if style not in STYLES:
    raise ValueError(
      f"length_penalty_style={style!r} is not one of {STYLES} (config.sample.length_penalty_style)."
    )
  length = np.arange(max_new_tokens + 1, dtype=np.float64)
  base = (5.0 + length) / 6.0 if style == "gnmt" else length
  with np.errstate(divide="ignore"):
    return (base**alpha).astype(np.float32)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """`x[b, index[b, j], ...]`: `[batch, n, ...]`, `[batch, m]` -> `[batch, m, ...]`."""
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class _State(NamedTuple):
  """The search between steps (all `[batch, beams, ...]` but the flags)."""

  i: jax.Array  # Generated tokens so far.
  run_tokens: jax.Array  # Running beams, `[batch, beams, max_new_tokens]`.
  run_scores: jax.Array  # Their summed log-probabilities.
  fin_tokens: jax.Array  # The best finished hypotheses so far (NEG-scored slots are empty).
  fin_scores: jax.Array
  fin_lengths: jax.Array
  fin_done: jax.Array  # Whether a slot holds a finished hypothesis.
  improvable: jax.Array  # `[batch, 1]`: the source still takes hypotheses.
  go_on: jax.Array  # Scalar: some source can still improve.


def _search(
  stepper: sampling.Stepper,
  divisor: jax.Array,
  *,
  batch: int,
  num_beams: int,
  max_new_tokens: int,
  eos_id: int | None,
  pad_id: int,
  early_stopping: bool | str,
  assume_longest: bool,
  forced_eos: bool,
) -> Beams:
  k, n = num_beams, max_new_tokens
  vocab = stepper.logits.shape[-1]
  top_k_mask = jnp.arange(2 * k) < k  # Only the best `beams` candidates may finish.
  stop_when_full = early_stopping is True

  def select(s: _State, logits: jax.Array) -> tuple[_State, jax.Array]:
    """Chooses generated token s.i from its logits `[batch x beams, vocab]`; returns the new
    state and each running beam's parent row."""
    i = s.i
    logp = jax.nn.log_softmax(logits, axis=-1)
    if forced_eos and eos_id is not None:  # Hugging Face's forced_eos_token_id.
      forced = jnp.where(jnp.arange(vocab) == eos_id, 0.0, -jnp.inf)
      logp = jnp.where(i == n - 1, forced, logp)
    logp = (logp.reshape(batch, k, vocab) + s.run_scores[:, :, None]).reshape(batch, k * vocab)
    cand_scores, cand = jax.lax.top_k(logp, 2 * k)
    parent, token = cand // vocab, (cand % vocab).astype(jnp.int32)
    cand_tokens = _gather(s.run_tokens, parent).at[:, :, i].set(token)
    ended = (token == eos_id if eos_id is not None else jnp.zeros_like(token, bool)) | (i == n - 1)

    running = cand_scores + ended * NEG
    keep = jax.lax.top_k(running, k)[1]
    run_scores = _gather(running, keep)

    finished_now = ended & top_k_mask
    scored = cand_scores / divisor[i + 1]
    scored = scored + (jnp.all(s.fin_done, 1, keepdims=True) & stop_when_full) * NEG
    scored = scored + (~s.improvable) * NEG
    scored = scored + (~finished_now) * NEG
    merged = jnp.concatenate([s.fin_scores, scored], 1)
    best = jax.lax.top_k(merged, k)[1]
    pick = lambda old, new: _gather(jnp.concatenate([old, new], 1), best)
    fin_scores, fin_done = _gather(merged, best), pick(s.fin_done, finished_now)

    # Hugging Face's stopping heuristic: the best running score at the length it is assumed
    # to end at, against the worst finished one.
    assumed = n if assume_longest else i + 1
    best_possible = run_scores[:, :1] / divisor[assumed]
    worst = jnp.where(fin_done, jnp.min(fin_scores, 1, keepdims=True), NEG)
    improvable = s.improvable & jnp.any(best_possible > worst, axis=1, keepdims=True)
    go_on = jnp.any(improvable) & ~(jnp.all(fin_done) & stop_when_full) & ~jnp.all(ended)
    new = _State(
      i + 1,
      _gather(cand_tokens, keep),
      run_scores,
      pick(s.fin_tokens, cand_tokens),
      fin_scores,
      pick(s.fin_lengths, jnp.full_like(token, i + 1)),
      fin_done,
      improvable,
      go_on,
    )
    rows = (jnp.arange(batch)[:, None] * k + _gather(parent, keep)).reshape(-1)
    return new, rows

  def body(carry: tuple[_State, Any]) -> tuple[_State, Any]:
    s, model_state = carry
    model_state, logits = stepper.step(
      model_state, s.run_tokens[:, :, s.i - 1].reshape(-1), s.i - 1
    )
    s, rows = select(s, logits)
    return s, stepper.reorder(model_state, rows)

  tokens = jnp.full((batch, k, n), pad_id, jnp.int32)
  start = _State(
    i=jnp.int32(0),
    run_tokens=tokens,
    run_scores=jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(NEG),  # Beam 0 alone at first.
    fin_tokens=tokens,
    fin_scores=jnp.full((batch, k), NEG, jnp.float32),
    fin_lengths=jnp.zeros((batch, k), jnp.int32),
    fin_done=jnp.zeros((batch, k), bool),
    improvable=jnp.ones((batch, 1), bool),
    go_on=jnp.bool_(True),
  )
  s, rows = select(start, stepper.logits)
  s, _ = jax.lax.while_loop(
    lambda c: (c[0].i < n) & c[0].go_on, body, (s, stepper.reorder(stepper.state, rows))
  )
  return Beams(s.fin_tokens, s.fin_lengths, s.fin_scores)


_STATIC = (
  "model",
  "num_beams",
  "max_new_tokens",
  "eos_id",
  "pad_id",
  "early_stopping",
  "assume_longest",
  "forced_eos",
  "use_cache",
)


@functools.partial(jax.jit, static_argnames=_STATIC + ("start_id",))
def _seq2seq(
  model,
  params,
  source,
  source_mask,
  divisor,
  *,
  start_id,
  num_beams,
  use_cache,
  max_new_tokens,
  **options,
):
  stepper = sampling.seq2seq_stepper(
    model, params, source, source_mask, start_id, max_new_tokens, use_cache, beams=num_beams
  )
  return _search(
    stepper,
    divisor,
    batch=source.shape[0],
    num_beams=num_beams,
    max_new_tokens=max_new_tokens,
    **options,
  )


@functools.partial(jax.jit, static_argnames=_STATIC)
def _lm(
  model,
  params,
  prompts,
  prompt_lengths,
  divisor,
  *,
  num_beams,
  use_cache,
  max_new_tokens,
  **options,
):
  stepper = sampling.lm_stepper(
    model,
    params,
    jnp.repeat(prompts, num_beams, 0),
    jnp.repeat(prompt_lengths, num_beams, 0),
    max_new_tokens,
    use_cache,
  )
  return _search(
    stepper,
    divisor,
    batch=prompts.shape[0],
    num_beams=num_beams,
    max_new_tokens=max_new_tokens,
    **options,
  )


def _options(
  num_beams: int,
  max_new_tokens: int,
  length_penalty: float,
  style: str,
  early_stopping: bool | str,
  **rest,
) -> tuple[jax.Array, dict]:
  """The penalty table (a traced argument: changing alpha or style does not recompile) and
  the static options; checks them, naming the setting."""
  if num_beams < 1:
    raise ValueError(f"num_beams={num_beams} (config.sample.num_beams) must be at least 1.")
  if early_stopping not in (True, False, "never"):
    raise ValueError(f"early_stopping={early_stopping!r} must be True, False or 'never'.")
  divisor = jnp.asarray(penalties(style, float(length_penalty), max_new_tokens))
  return divisor, dict(
    num_beams=num_beams,
    max_new_tokens=max_new_tokens,
    early_stopping=early_stopping,
    assume_longest=early_stopping == "never" and length_penalty > 0,
    **rest,
  )


def beam_search_seq2seq(
  model: nn.Module,
  params: Any,
  source: jax.Array,
  source_mask: jax.Array | None,
  *,
  start_id: int,
  num_beams: int,
  max_new_tokens: int,
  eos_id: int | None,
  pad_id: int = 0,
  length_penalty: float = 0.6,
  length_penalty_style: str = "gnmt",
  early_stopping: bool | str = False,
  forced_eos: bool = False,
  use_cache: bool = True,
) -> Beams:
  """Beam search of an encoder-decoder model from the decoder start token.

  Args:
    source: int `[batch, source_len]`; source_mask `[batch, source_len]`, 1 on real tokens
      (None: all real).
    start_id: decoder start token (Marian: pad id; T5: 0), excluded from the output.
    max_new_tokens: longest hypothesis (Hugging Face: max_length - 1, or max_new_tokens).
    length_penalty, length_penalty_style: alpha, and "gnmt" or "hf" (module docstring).
    early_stopping: Hugging Face's: False (heuristic), True (stop at `beams` finished) or "never".
    forced_eos: the last step may only emit EOS (Hugging Face's forced_eos_token_id; Marian).
  Returns:
    `Beams(tokens [batch, beams, max_new_tokens], lengths, scores)`, best first.
  """
  sampling.check_length(model, 1, max_new_tokens, "beam_search_seq2seq")
  divisor, options = _options(
    num_beams,
    max_new_tokens,
    length_penalty,
    length_penalty_style,
    early_stopping,
    eos_id=eos_id,
    pad_id=pad_id,
    forced_eos=forced_eos,
    use_cache=use_cache,
  )
  source = jnp.asarray(source, jnp.int32)
  source_mask = (
    jnp.ones_like(source) if source_mask is None else jnp.asarray(source_mask, jnp.int32)
  )
  return _seq2seq(model, params, source, source_mask, divisor, start_id=start_id, **options)


def beam_search(
  model: nn.Module,
  params: Any,
  prompts: jax.Array,
  prompt_lengths: jax.Array,
  *,
  num_beams: int,
  max_new_tokens: int,
  eos_id: int | None,
  pad_id: int = 0,
  length_penalty: float = 0.6,
  length_penalty_style: str = "gnmt",
  early_stopping: bool | str = False,
  forced_eos: bool = False,
  use_cache: bool = True,
) -> Beams:
  """Beam search of a decoder-only model continuing left-padded prompts `[batch, prompt_len]`
  (`sampling.left_pad`); lengths and scores count generated tokens only. Arguments as
  `beam_search_seq2seq`."""
  sampling.check_length(
    model, prompts.shape[1] + prefix.offset(params), max_new_tokens, "beam_search"
  )
  divisor, options = _options(
    num_beams,
    max_new_tokens,
    length_penalty,
    length_penalty_style,
    early_stopping,
    eos_id=eos_id,
    pad_id=pad_id,
    forced_eos=forced_eos,
    use_cache=use_cache,
  )
  return _lm(
    model,
    params,
    jnp.asarray(prompts, jnp.int32),
    jnp.asarray(prompt_lengths, jnp.int32),
    divisor,
    **options,
  )
