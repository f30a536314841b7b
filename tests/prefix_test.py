"""Prefix tuning (jtrans/finetune/prefix.py) and prompt tuning (prompt.py): a prefix set to the
keys and values the base computes for a prompt, or a soft prompt set to that prompt's token
embeddings, gives the base's logits on prompt + text (learned and rotary positions,
grouped-query attention, unrolled or scanned layers); cached decoding with either equals
decoding by full forward passes; a run trains the prefix (through its MLP) or the soft prompt
alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import decoding, finetune, objectives, train
from jtrans.data.tokenizers import ByteTokenizer
from jtrans.finetune import prefix, prompt
from tests.finetune_test import assert_only_added_leaves_trained, flat, initial_params, saved

LLAMA = {"positions": "rotary", "norm": "rmsnorm", "num_kv_heads": 1, "use_bias": False}


def prefix_config(c, model=None, **extra):
  c = c.copy_and_resolve_references()
  c.model.num_layers, c.model.max_len = 2, 40  # The prefix's 5 positions, then 32 tokens.
  c.model.update(model or {})
  c.finetune.method, c.finetune.prefix_length, c.finetune.prefix_hidden = "prefix", 5, 16
  c.finetune.update(extra)
  return c


def prompt_cache(layout, params, prompt):
  """Each layer's cached keys and values `[layers, P, kv_heads, head_dim]` for `prompt`
  `[1, P]`, as decoding computes them."""
  model, length = layout.model, prompt.shape[1]
  cache = model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32), decode=True)["cache"]
  _, mutated = model.apply(
    {"params": params, "cache": jax.tree.map(jnp.zeros_like, cache)},
    prompt,
    positions=jnp.arange(length)[None],
    decode=True,
    mutable=["cache"],
  )
  found = {p: x for p, x in flat(mutated["cache"]).items() if p.endswith(("cached_key", "value"))}
  tables = []
  for name in ("cached_key", "cached_value"):
    stacked = [found[p] for p in sorted(found, key=prefix_order) if p.endswith(name)]
    if len(stacked) == 1 and stacked[0].ndim == 5:  # Scanned: [layers, 1, P, heads, dim].
      tables.append(stacked[0][:, 0])
    else:
      tables.append(np.stack([x[0] for x in stacked]))
  return tables


def prefix_order(path):
  return [int(t) if t.isdigit() else t for t in path.replace("_", "/").split("/")]


@pytest.mark.parametrize(
  "model, scan", [({}, False), (LLAMA, True)], ids=["gpt2_unrolled", "llama_gqa_scanned"]
)
def test_a_prefix_of_a_prompts_keys_and_values_is_that_prompt(tiny_config, model, scan):
  """Logits of `text` with the prefix = the base's cache of `prompt` equal the base's logits
  of `prompt + text` at the text's positions (objectives.logits: the train and eval path)."""
  c = prefix_config(tiny_config, {**model, "scan_layers": scan})
  params, layout = initial_params(c)
  base = {k: v for k, v in params.items() if k != prefix.KEY}
  rng = np.random.default_rng(0)
  words = rng.integers(3, 200, (1, 5)).astype(np.int32)  # The prompt.
  text = rng.integers(3, 200, (2, 11)).astype(np.int32)
  keys, values = prompt_cache(layout, base, words)
  tuned = finetune.model_params({**base, prefix.KEY: {"key": keys, "value": values}}, None)
  got = objectives.logits(layout.model, tuned, {"inputs": text}, "lm", True)
  whole = np.concatenate([np.repeat(words, 2, axis=0), text], axis=1)
  want = layout.model.apply({"params": base}, whole)[:, 5:]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=2e-5)
  # A soft prompt of the prompt's token embeddings is that prompt too (prompt tuning).
  table = base["embed"]["token_embed"]["embedding"]
  soft = {**base, prompt.KEY: {"embedding": np.asarray(table)[words[0]]}}
  got = objectives.logits(
    layout.model, finetune.model_params(soft, None, layout.model), {"inputs": text}, "lm", True
  )
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=2e-5)
  # A prefix of other keys changes them: the model reads it.
  other = finetune.model_params({**base, prefix.KEY: {"key": values, "value": keys}}, None)
  moved = objectives.logits(layout.model, other, {"inputs": text}, "lm", True)
  assert np.abs(np.asarray(moved) - np.asarray(want)).max() > 1e-3


@pytest.mark.parametrize(
  "model, method", [({}, "prefix"), (LLAMA, "prompt")], ids=["gpt2_prefix", "llama_gqa_prompt"]
)
def test_cached_decoding_with_a_prefix_equals_full_forward_decoding(tiny_config, model, method):
  """Left-padded prompts of two lengths, greedy: the KV cache path and the full-forward path
  give the same tokens."""
  c = prefix_config(tiny_config, model, prefix_hidden=0, method=method)
  params, layout = initial_params(c)
  tuned = finetune.model_params(params, layout.tuning, layout.model)
  assert prefix.offset(tuned) == 5
  tokens, lengths = decoding.left_pad([[5, 6, 7, 8], [9, 10]], 0)
  run = lambda p, cache: np.asarray(
    decoding.generate(
      layout.model,
      p,
      tokens,
      lengths,
      jax.random.key(0),
      max_new_tokens=8,
      temperature=0.0,
      use_cache=cache,
    ).tokens
  )
  np.testing.assert_array_equal(run(tuned, True), run(tuned, False))
  # And the prefix (or soft prompt) is read: the logits move.
  base = {k: v for k, v in params.items() if k not in (prefix.KEY, prompt.KEY)}
  logits = lambda p: np.asarray(objectives.logits(layout.model, p, {"inputs": tokens}, "lm", True))
  assert np.abs(logits(tuned) - logits(base)).max() > 1e-3


def test_a_prefix_run_trains_the_prefix_alone(tiny_config, tmp_path):
  """Through the loop and a checkpoint: the base bitwise unchanged (stored in bfloat16), the
  reparametrised prefix moved, Adam's moments for its leaves alone; eval and --mode=generate
  read the prefix (and fold gives the same keys and values without the MLP)."""
  from jtrans import modes

  c = prefix_config(tiny_config, frozen_dtype="bfloat16")
  c.train.steps = c.train.eval_every = c.train.checkpoint_every = 3
  start, layout = initial_params(c)
  assert sorted(start[prefix.KEY]) == ["bi", "bo", "embedding", "wi", "wo"]
  train.train(c, str(tmp_path))
  state = saved(str(tmp_path))
  assert_only_added_leaves_trained(start, state, "prefix")
  trained, total = finetune.count(state["params"], layout.tuning)
  assert trained == 5 * 32 + 32 * 16 + 16 + 16 * (2 * 2 * 2 * 16) + 2 * 2 * 2 * 16
  folded = prefix.fold(state["params"])
  a, b = (flat(finetune.model_params(p, None)) for p in (state["params"], folded))
  for path in a:
    np.testing.assert_allclose(a[path], b[path], atol=1e-6, err_msg=path)
  restored = modes.restore_params(c, str(tmp_path))
  assert prefix.offset(restored) == 5
  # --mode=generate from the workdir decodes with the saved prefix (restored and merged).
  c.sample.temperature = 0.0
  (text,) = modes.generate(c, ["def "], str(tmp_path), None, max_new_tokens=6)
  tok = ByteTokenizer()
  tokens, lengths = decoding.left_pad([list(tok.encode("def "))], tok.pad_id)
  greedy = lambda p: (
    decoding.generate(  # noqa: E731
      layout.model, p, tokens, lengths, max_new_tokens=6, temperature=0.0, eos_id=tok.eos_id
    ).tokens
  )
  assert text == tok.decode(greedy(finetune.model_params(state["params"], layout.tuning)))


def test_a_prompt_run_trains_the_soft_prompt_alone(tiny_config, tmp_path):
  """Prompt tuning through the loop: the soft prompt (sampled vocabulary rows at first) moves,
  the base stays bitwise, and it is the one trained leaf."""
  c = prefix_config(tiny_config, method="prompt")
  c.optim.lr, c.train.log_every = 3e-2, 1
  c.train.steps = c.train.eval_every = c.train.checkpoint_every = 4
  start, layout = initial_params(c)
  table = np.asarray(start["embed"]["token_embed"]["embedding"])
  assert all(any(np.array_equal(r, t) for t in table) for r in start[prompt.KEY]["embedding"])
  train.train(c, str(tmp_path))
  state = saved(str(tmp_path))
  before, after = flat(start), flat(state["params"])
  for path, value in after.items():
    moved = not np.array_equal(value, before[path])
    assert moved == (path == "prompt/embedding"), path
  assert finetune.count(state["params"], layout.tuning)[0] == 5 * 32


def test_prefix_tuning_refuses_what_it_cannot_do(tiny_config, tmp_path):
  from jtrans import modes

  c = prefix_config(tiny_config)
  c.model.family, c.loss.objective = "encoder", "mlm"
  with pytest.raises(ValueError, match="method='prefix' or 'prompt' needs a decoder"):
    initial_params(c)
  with pytest.raises(ValueError, match="set seq_len to at most 27"):
    initial_params(prefix_config(tiny_config, model={"max_len": 32}))
  with pytest.raises(ValueError, match="prefix_length >= 1"):
    initial_params(prefix_config(tiny_config, prefix_length=0))
  with pytest.raises(ValueError, match="--mode=export: a prefix-tuned model"):
    modes.export(prefix_config(tiny_config), str(tmp_path), str(tmp_path / "hf"))


def test_prefix_tuning_of_an_imported_gpt2_as_configs_finetune_sets_it(data_dir, tmp_path):
  """configs/finetune.py:<directory>,prefix on a Hugging Face GPT-2 directory (64 positions):
  seq_len leaves the prefix its 10 positions, and two steps train the prefix alone, the
  imported weights bitwise unchanged (after their bfloat16 storage)."""
  import torch
  import transformers

  from configs import finetune as finetune_config
  from jtrans import hf

  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(
    transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4)
  )
  model.save_pretrained(tmp_path / "gpt2")
  c = finetune_config.get_config(f"{tmp_path / 'gpt2'},prefix")
  assert (c.finetune.method, c.finetune.prefix_length, c.data.seq_len) == ("prefix", 10, 54)
  c.data.tokenizer, c.data.data_dir = "byte", data_dir
  c.train.batch_size, c.train.steps, c.train.eval_batches = 8, 2, 1
  c.train.log_every = c.train.eval_every = c.train.checkpoint_every = 2
  c.sample.num_samples, c.optim.lr = 0, 1e-2
  train.train(c, str(tmp_path / "run"))
  params = saved(str(tmp_path / "run"))["params"]
  _, imported = hf.load_pretrained(str(tmp_path / "gpt2"))
  got, want = flat(params), flat(imported)
  for path, value in want.items():
    np.testing.assert_array_equal(got[path], value.astype(jnp.bfloat16), err_msg=path)
  assert sorted(p for p in got if p not in want) == [
    f"prefix/{k}" for k in sorted(params["prefix"])
  ]
