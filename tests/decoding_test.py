"""Decoding: the KV cache against full forward passes, sampling filters and frequencies, EOS,
beam search against exhaustive search, and parity with Hugging Face `generate`.

Models are tiny, their parameters drawn at normal(0.6) (the 0.02 init repeats one token) so
that greedy paths vary; each program is compiled once per module where it can be.
"""

import dataclasses
import functools
import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import decoding
from jtrans.decoding import beam_search, sampling
from jtrans.models import ModelConfig, build_model

STEPS = 32
DECODER = ModelConfig(
  vocab_size=40, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=48
)
# T5-shaped: the relative position bias must see decode steps at their positions. (Random
# post-norm models repeat one token; Marian's post-norm is covered by the Hugging Face test.)
ENC_DEC = dataclasses.replace(
  DECODER,
  family="encoder_decoder",
  positions="relative",
  norm="rmsnorm",
  use_bias=False,
  relative_buckets=8,
  relative_max_distance=16,
  num_encoder_layers=1,
)
VARIANTS = {
  "gpt2": {},
  "rotary_gqa": {
    "positions": "rotary",
    "num_kv_heads": 2,
    "norm": "rmsnorm",
    "use_bias": False,
    "gated_mlp": True,
    "activation": "silu",
  },
  "scan": {"scan_layers": True},
}
PROMPTS = [[5, 6, 7, 8, 9], [3, 4], [11, 12, 13]]


def scaled_params(model, *inputs, scale=0.6, seed=0, **kwargs):
  """Every parameter drawn from normal(scale) by numpy (nothing to compile)."""
  shapes = jax.eval_shape(
    lambda: nn.meta.unbox(model.init(jax.random.key(0), *inputs, **kwargs)["params"])
  )
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), shapes)


@functools.partial(jax.jit, static_argnums=0)
def forward(model, params, *inputs, **kwargs):
  return model.apply({"params": params}, *inputs, **kwargs)


@jax.jit
def sample(key, logits, temperature, top_k, top_p):
  return decoding.sample_logits(key, logits, temperature=temperature, top_k=top_k, top_p=top_p)


@jax.jit
def cut(logits, top_k, top_p):
  return decoding.filter_logits(logits, top_k=top_k, top_p=top_p)


def reference_greedy(model, params, prompts, steps):
  """Greedy decoding by full forward passes, each prompt unpadded at the start of its row of
  a fixed buffer (causal attention ignores what follows): as if decoded alone."""
  buffer = np.zeros((len(prompts), model.cfg.max_len), np.int32)
  ends = np.array([len(p) for p in prompts])
  for row, prompt in enumerate(prompts):
    buffer[row, : len(prompt)] = prompt
  rows = np.arange(len(prompts))
  for step in range(steps):
    logits = np.asarray(forward(model, params, buffer))
    buffer[rows, ends + step] = logits[rows, ends + step - 1].argmax(-1)
  return np.stack([buffer[r, ends[r] : ends[r] + steps] for r in rows])


@pytest.fixture(scope="module")
def lm():
  model = build_model(DECODER)
  params = scaled_params(model, jnp.zeros((1, 8), jnp.int32))
  tokens, lengths = decoding.left_pad(PROMPTS, pad_id=0)
  greedy = decoding.generate(model, params, tokens, lengths, max_new_tokens=STEPS)
  return model, params, tokens, lengths, np.asarray(greedy.tokens)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cache_equals_full_forward_and_each_prompt_alone(variant, lm):
  if variant == "gpt2":
    model, params, tokens, lengths, got = lm
  else:
    model = build_model(dataclasses.replace(DECODER, **VARIANTS[variant]))
    params = scaled_params(model, jnp.zeros((1, 8), jnp.int32))
    tokens, lengths = decoding.left_pad(PROMPTS, pad_id=0)
    got = np.asarray(decoding.generate(model, params, tokens, lengths, max_new_tokens=STEPS).tokens)
  assert max(len(set(row)) for row in got) >= 3  # Paths that vary, not one repeated token.
  np.testing.assert_array_equal(got, reference_greedy(model, params, PROMPTS, STEPS))
  if variant == "gpt2":
    no_cache = decoding.generate(
      model, params, tokens, lengths, max_new_tokens=STEPS, use_cache=False
    )
    np.testing.assert_array_equal(np.asarray(no_cache.tokens), got)


def test_encoder_decoder_cache_equals_full_forward():
  model = build_model(ENC_DEC)
  source = np.array([[5, 6, 7, 8, 9, 10], [3, 4, 5, 0, 0, 0]], np.int32)
  mask = (source > 0).astype(np.int32)
  params = scaled_params(model, source, source[:, :4], encoder_mask=mask, seed=2)
  got = decoding.generate_seq2seq(model, params, source, mask, start_id=1, max_new_tokens=STEPS)
  assert np.all(np.asarray(got.lengths) == STEPS)
  buffer = np.zeros((2, STEPS + 1), np.int32)
  buffer[:, 0] = 1
  for t in range(STEPS):
    logits = forward(model, params, source, buffer, encoder_mask=mask)
    buffer[:, t + 1] = np.asarray(jnp.argmax(logits[:, t], axis=-1))
  np.testing.assert_array_equal(np.asarray(got.tokens), buffer[:, 1:])
  assert len(set(buffer[0])) >= 3


def test_top_k_1_is_greedy(lm):
  model, params, tokens, lengths, greedy = lm
  out = decoding.generate(
    model,
    params,
    tokens,
    lengths,
    jax.random.key(3),
    max_new_tokens=STEPS,
    temperature=1.0,
    top_k=1,
  )
  np.testing.assert_array_equal(np.asarray(out.tokens), greedy)


@pytest.mark.parametrize("p", [0.3, 0.75, 0.95])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
  logits = np.random.default_rng(0).normal(0, 2, (16, 30)).astype(np.float32)
  filtered = np.asarray(cut(jnp.asarray(logits), 0, jnp.float32(p)))
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for row, f in zip(probs, filtered):
    order = np.argsort(-row)
    size = int(np.searchsorted(np.cumsum(row[order]), p) + 1)  # First prefix with mass >= p.
    want = np.zeros_like(row)
    want[order[:size]] = row[order[:size]] / row[order[:size]].sum()
    got = np.exp(f - f.max())
    got /= got.sum()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.isfinite(f).sum() == size


def test_top_k_keeps_k_tokens():
  logits = jnp.asarray(np.random.default_rng(1).normal(0, 1, (4, 30)), jnp.float32)
  assert np.all(np.isfinite(np.asarray(cut(logits, 5, 1.0))).sum(-1) == 5)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.5, 0, 1.0), (1.5, 6, 1.0), (1.5, 0, 0.7)])
def test_sampling_frequencies_match_the_filtered_softmax(lm, temperature, top_k, top_p):
  """4000 draws from the model's next-token logits against softmax(logits / T) cut by numpy;
  chi-square with the rare tokens pooled. (The loop's sampling path: test_top_k_1_is_greedy.)"""
  model, params, *_ = lm
  samples, prompt = 4000, PROMPTS[0]
  buffer = np.zeros((len(PROMPTS), DECODER.max_len), np.int32)
  buffer[0, : len(prompt)] = prompt  # The reference's compiled shape.
  logits = np.asarray(forward(model, params, buffer)[0, len(prompt) - 1])
  draws = sample(
    jax.random.key(7),
    jnp.tile(logits, (samples, 1)),
    jnp.float32(temperature),
    jnp.int32(top_k),
    jnp.float32(top_p),
  )
  logits = logits.astype(np.float64) / temperature
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  order = np.argsort(-probs)
  keep = np.zeros(len(probs), bool)
  keep[order[: top_k or len(probs)]] = True
  if top_p < 1:
    size = int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)
    keep[order[size:]] = False
  expected = np.where(keep, probs, 0)
  expected = samples * expected / expected.sum()
  observed = np.bincount(np.asarray(draws), minlength=DECODER.vocab_size)
  assert observed[~keep].sum() == 0
  bins = expected >= 5
  assert bins.sum() >= 3, "the distribution is too peaked to test"
  obs = np.append(observed[bins], observed[~bins].sum())
  exp = np.append(expected[bins], expected[~bins].sum())
  chi2 = float(((obs - exp) ** 2 / np.maximum(exp, 1e-9)).sum())
  dof = len(obs) - 1
  assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)  # A ~1e-6 false alarm rate.


def test_rows_stop_at_eos_and_lengths_count_it(lm):
  model, params, tokens, lengths, greedy = lm
  eos = int(greedy[0, 4])
  out = decoding.generate(
    model, params, tokens, lengths, max_new_tokens=STEPS, eos_id=eos, pad_id=0
  )
  got, got_lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for row in range(len(PROMPTS)):
    hits = np.flatnonzero(greedy[row] == eos)
    length = int(hits[0]) + 1 if len(hits) else STEPS
    assert got_lengths[row] == length
    np.testing.assert_array_equal(got[row, :length], greedy[row, :length])
    assert np.all(got[row, length:] == 0)
  assert got_lengths[0] <= 5


def test_bad_lengths_fail_naming_the_setting(lm):
  model, params, tokens, lengths, _ = lm
  with pytest.raises(ValueError, match="config.model.max_len=48"):
    decoding.generate(model, params, tokens, lengths, max_new_tokens=48)
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    decoding.generate(model, params, tokens, lengths, max_new_tokens=0)
  with pytest.raises(ValueError, match="at least one token"):
    decoding.left_pad([[1, 2], []], pad_id=0)


# ---------------------------------------------------------------- beam search


def test_beam_search_finds_the_exhaustive_best():
  """Vocabulary {0, EOS=1, 2}, up to 4 tokens: 31 hypotheses. With 24 beams nothing is pruned
  before it is scored, so the 24 returned must be the 24 best of all, for each penalty.
  Without the cache (the Marian test below uses it): the full-forward steppers, reordered."""
  vocab, steps, beams, eos = 3, 4, 24, 1
  model = build_model(
    dataclasses.replace(ENC_DEC, vocab_size=vocab, num_layers=1, output_bias=True, embed_dim=16)
  )
  source = np.array([[2, 1, 2, 2, 0], [1, 2, 2, 0, 0]], np.int32)
  mask = (source > 0).astype(np.int32)
  params = scaled_params(model, source, source[:, :3], encoder_mask=mask, scale=0.7)
  params["logits"]["bias"] = jnp.array([0.0, 1.2, 0.0])  # EOS likely: hypotheses of all lengths.
  hyps = [
    list(prefix) + [last]
    for d in range(1, steps + 1)
    for prefix in itertools.product([0, 2], repeat=d - 1)
    for last in ([eos] if d < steps else range(vocab))
  ]
  inputs = np.array([[0] + h[:-1] + [0] * (steps - len(h)) for h in hyps], np.int32)
  logits = forward(
    model,
    params,
    np.repeat(source, len(hyps), 0),
    np.tile(inputs, (2, 1)),
    encoder_mask=np.repeat(mask, len(hyps), 0),
  )
  logp = np.asarray(jax.nn.log_softmax(logits, -1)).reshape(2, len(hyps), steps, vocab)
  log_probs = [
    [sum(logp[b, i, j, t] for j, t in enumerate(h)) for i, h in enumerate(hyps)] for b in range(2)
  ]
  best_lengths = set()
  for style, alpha in (("gnmt", 0.1), ("gnmt", 3.0), ("hf", 1.0)):
    out = beam_search.beam_search_seq2seq(
      model,
      params,
      source,
      mask,
      start_id=0,
      num_beams=beams,
      max_new_tokens=steps,
      eos_id=eos,
      length_penalty=alpha,
      length_penalty_style=style,
      early_stopping="never",
      use_cache=False,
    )
    divisor = beam_search.penalties(style, alpha, steps)
    for b in range(2):
      scored = sorted(
        ((s / divisor[len(h)], h) for s, h in zip(log_probs[b], hyps)), key=lambda x: -x[0]
      )[:beams]
      np.testing.assert_allclose(np.asarray(out.scores[b]), [s for s, _ in scored], rtol=1e-5)
      best = scored[0][1]
      assert int(out.lengths[b, 0]) == len(best)
      np.testing.assert_array_equal(np.asarray(out.tokens[b, 0, : len(best)]), best)
      best_lengths.add(len(best))
  assert len(best_lengths) > 1  # The penalty changed which length wins.


def test_beam_reorder_moves_batch_rows_of_a_scanned_cache():
  """Under nn.scan cache leaves are `[layers, batch, ...]`: rows move on axis 1; the cache
  index and the cross-attention keys (one source per beam group) stay."""
  model = build_model(dataclasses.replace(ENC_DEC, scan_layers=True, num_layers=3))
  source = np.ones((4, 5), np.int32)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), source, source[:, :6], encoder_mask=source, decode=True)[
      "cache"
    ]
  )
  rng = np.random.default_rng(0)
  cache = jax.tree.map(lambda s: rng.integers(0, 9, s.shape).astype(s.dtype), shapes)
  rows = np.array([2, 2, 0, 1])
  moved = sampling._reorder_cache(cache, jnp.asarray(rows))
  flat = dict(jax.tree_util.tree_flatten_with_path(moved)[0])
  for path, before in jax.tree_util.tree_flatten_with_path(cache)[0]:
    name = path[-1].key
    if name in ("cache_index", "cached_cross_key", "cached_cross_value"):
      np.testing.assert_array_equal(flat[path], before)
    else:
      assert before.shape[:2] == (3, 4), (name, before.shape)
      np.testing.assert_array_equal(flat[path], before[:, rows])


def test_gnmt_penalty_values():
  np.testing.assert_allclose(
    beam_search.penalties("gnmt", 0.6, 3)[1:], [1.0, (7 / 6) ** 0.6, (8 / 6) ** 0.6], rtol=1e-6
  )
  np.testing.assert_allclose(beam_search.penalties("hf", 2.0, 3)[1:], [1.0, 4.0, 9.0])
  with pytest.raises(ValueError, match="length_penalty_style"):
    beam_search.penalties("wu", 0.6, 3)


# ---------------------------------------------------------------- Hugging Face parity


@pytest.fixture(scope="module")
def transformers():
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import transformers

  transformers.logging.set_verbosity_error()
  return transformers


def perturbed(model, std=0.3):
  import torch

  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad:
        p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim == 1 else std))
  return model.float().eval()


def test_greedy_equals_hugging_face_gpt2(transformers, tmp_path):
  import torch

  from jtrans import hf

  vocab, steps = 64, 20
  torch.manual_seed(0)
  model = perturbed(
    transformers.GPT2LMHeadModel(
      transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=40,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=vocab - 1,
      )
    )
  )
  prompts = np.array([[5, 9, 3, 17, 8], [40, 2, 2, 31, 6]], np.int64)
  free = model.generate(
    torch.tensor(prompts),
    do_sample=False,
    max_new_tokens=steps,
    pad_token_id=0,
    eos_token_id=vocab - 1,
  )[:, 5:].numpy()
  eos = int(free[0, 6])  # An EOS that row 0 emits mid-way.
  want = model.generate(
    torch.tensor(prompts), do_sample=False, max_new_tokens=steps, pad_token_id=0, eos_token_id=eos
  )[:, 5:].numpy()
  model.save_pretrained(tmp_path, safe_serialization=True)
  cfg, params = hf.load_pretrained(str(tmp_path))
  out = decoding.generate(
    build_model(cfg), params, prompts, np.full(2, 5), max_new_tokens=steps, eos_id=eos, pad_id=0
  )
  got = np.asarray(out.tokens)[:, : want.shape[1]]
  np.testing.assert_array_equal(got, want)
  assert len(set(free[1])) >= 3 and int(out.lengths[0]) <= 7


def test_beam_search_equals_hugging_face_marian(transformers, tmp_path):
  """Post-norm Marian with forced EOS; the EOS is a token the best beam of row 0 emits at
  step 3, so that hypotheses end at different lengths. Default length penalty, then 0."""
  import torch

  from jtrans import hf

  vocab, pad, steps = 64, 63, 12
  torch.manual_seed(0)
  model = perturbed(
    transformers.MarianMTModel(
      transformers.MarianConfig(
        vocab_size=vocab,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
      )
    )
  )
  source = np.random.default_rng(0).integers(1, pad, (4, 9))
  mask = np.ones_like(source)
  mask[1, 6:], source[1, 6:] = 0, pad
  hf_inputs = dict(
    input_ids=torch.tensor(source),
    attention_mask=torch.tensor(mask),
    num_beams=4,
    do_sample=False,
    max_new_tokens=steps,
  )
  eos = int(model.generate(**hf_inputs)[0, 3])
  model.save_pretrained(tmp_path, safe_serialization=True)
  cfg, params = hf.load_pretrained(str(tmp_path))
  ended_early = []
  for alpha in (1.0, 0.0):  # 1.0 is generate's default.
    want = model.generate(
      **hf_inputs, eos_token_id=eos, forced_eos_token_id=eos, length_penalty=alpha
    )[:, 1:].numpy()
    out = beam_search.beam_search_seq2seq(
      build_model(cfg),
      params,
      source,
      mask,
      start_id=pad,
      num_beams=4,
      max_new_tokens=steps,
      eos_id=eos,
      pad_id=pad,
      length_penalty=alpha,
      length_penalty_style="hf",
      forced_eos=True,
    )
    got = np.asarray(out.tokens[:, 0])
    np.testing.assert_array_equal(got[:, : want.shape[1]], want)
    assert np.all(got[:, want.shape[1] :] == pad)
    np.testing.assert_array_equal(np.asarray(out.lengths[:, 0]), (want != pad).sum(1))
    ended_early.append(int(out.lengths[:, 0].min()) < steps)
  assert all(ended_early)
