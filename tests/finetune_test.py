"""Fine-tuning (jtrans/finetune): freezing by path and LoRA, on the path a run takes
(`config.finetune` through parts.build_layout, the train loop and checkpoints), against float64
numpy and against the model without adapters."""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import gpt2
from jtrans import finetune, parts, train
from jtrans.finetune import lora
from jtrans.models import ModelConfig, build_model, example_inputs

QV = "attention/(query|value)$"


def lora_config(c, targets=QV, **extra):
  c = c.copy_and_resolve_references()
  c.finetune.method, c.finetune.lora_targets = "lora", targets
  c.finetune.update(extra)
  return c


def initial_params(c):
  layout = parts.build_layout(c)
  return jax.device_get(jax.jit(layout.init)(jax.random.key(c.seed)).params), layout


def saved(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored["state"])


def flat(tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {finetune.path_of(p): np.asarray(x) for p, x in leaves}


def assert_only_added_leaves_trained(start, state, key: str) -> dict[str, np.ndarray]:
  """The leaves under `key` (float32) moved; every other one is bitwise its start, stored in
  bfloat16; Adam's two moments exist for the moved ones alone. Returns the final leaves."""
  before, after = flat(start), flat(state["params"])
  assert before.keys() == after.keys()
  for path, value in after.items():
    if path.startswith(f"{key}/"):
      assert value.dtype == np.float32 and not np.array_equal(value, before[path]), path
    else:
      assert value.dtype == jnp.bfloat16, path
      np.testing.assert_array_equal(value, before[path], err_msg=path)
  # Adam's two moments per trained leaf, plus scalar counts: no state for the frozen leaves.
  sizes = [x.size for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x)]
  assert sum(sizes) == 2 * sum(v.size for p, v in after.items() if p.startswith(f"{key}/"))
  return after


def test_fresh_adapters_leave_the_logits_bitwise_unchanged(tiny_config):
  """B = 0: the merged model is the base model, bit for bit (a bfloat16-stored base too)."""
  for frozen_dtype in ("", "bfloat16"):
    c = lora_config(tiny_config, frozen_dtype=frozen_dtype)
    params, layout = initial_params(c)
    assert not flat(params[lora.KEY])["decoder/block_0/attention/query/b"].any()
    base = {k: v for k, v in params.items() if k != lora.KEY}
    inputs = example_inputs(layout.model_cfg, 32, 0)
    want = layout.model.apply({"params": base}, *inputs)
    got = layout.model.apply({"params": lora.merge(params, layout.tuning)}, *inputs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_lora_run_trains_the_adapters_alone(tiny_config, tmp_path):
  """After training (the loop, a checkpoint save and restore): every frozen parameter is
  bitwise its initial value, stored in bfloat16; the adapters moved; the optimizer holds
  moments for the adapters and nothing else."""
  c = lora_config(tiny_config, frozen_dtype="bfloat16")
  start, _ = initial_params(c)
  train.train(c, str(tmp_path))
  after = assert_only_added_leaves_trained(start, saved(str(tmp_path)), "lora")
  # query and value of the one block: A and B each.
  assert len([p for p in after if p.startswith("lora/")]) == 4


def test_full_fine_tuning_of_a_chosen_subset_freezes_the_rest(tiny_config, tmp_path):
  """`trainable` regexes without LoRA: the MLP kernels train, every other leaf stays."""
  c = tiny_config.copy_and_resolve_references()
  c.finetune.trainable = r"mlp/w[io]/kernel$"
  start, _ = initial_params(c)
  train.train(c, str(tmp_path))
  before, after = flat(start), flat(saved(str(tmp_path))["params"])
  for path, value in after.items():
    if path.endswith(("mlp/wi/kernel", "mlp/wo/kernel")):
      assert not np.array_equal(value, before[path]), path
    else:
      np.testing.assert_array_equal(value, before[path], err_msg=path)


@pytest.mark.parametrize(
  "family, scan",
  [
    ("decoder", False),
    ("decoder", True),
    ("encoder", False),
    ("encoder_decoder", False),
    ("vit", False),
  ],
)
def test_merged_kernels_are_w_plus_scaled_a_b_for_every_family(family, scan):
  """Every family and a scanned stack: each adapted kernel is W + (alpha / r) A B with A's rows
  the kernel's fan-in flattened row-major (the attention output's [heads, head_dim], as a
  Hugging Face o_proj sees it), in float64 numpy; the unadapted leaves are untouched; and the
  first query projection's output is x W + (alpha / r) (x A) B + bias."""
  cfg = ModelConfig(
    family=family,
    vocab_size=40,
    num_layers=2,
    num_heads=2,
    embed_dim=16,
    mlp_dim=32,
    max_len=8,
    image_size=8,
    patch_size=4,
    scan_layers=scan,
  )
  model = build_model(cfg)
  inputs = example_inputs(cfg, 8, 8)
  params = nn.meta.unbox(model.init(jax.random.key(0), *inputs)["params"])
  settings = finetune.Settings(
    method="lora", lora_targets="attention/(query|out)$", lora_rank=3, lora_alpha=6.0
  )
  adapters = lora.init(params, settings, jax.random.key(1))
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), adapters)
  merged = flat(lora.merge({**params, lora.KEY: adapters}, settings))
  base, pieces = flat(params), flat(adapters)
  assert merged.keys() == base.keys()
  adapted = {p.rsplit("/", 1)[0] for p in pieces}
  assert adapted and all(p.endswith(("query", "out")) for p in adapted)
  for path, value in merged.items():
    module = path[: -len("/kernel")]
    if module not in adapted:
      np.testing.assert_array_equal(value, base[path], err_msg=path)
      continue
    w = base[path].astype(np.float64)
    a, b = (pieces[f"{module}/{k}"].astype(np.float64) for k in "ab")
    lead = 1 if scan and "/layers/" in path else 0
    want = w + 2.0 * np.matmul(a, b).reshape(w.shape)
    assert a.shape[lead:] == (
      int(np.prod(w.shape[lead : lead + (2 if module.endswith("out") else 1)])),
      3,
    )
    np.testing.assert_allclose(value, want, atol=1e-5, err_msg=path)


def test_the_adapted_projection_is_x_w_plus_x_a_b(tiny_config):
  """LoRA as the paper writes it, unmerged, in float64: the first block's query projection of
  the merged model equals x W_q + b_q + (alpha / r) (x A) B from the same input x."""
  c = lora_config(tiny_config, lora_rank=4, lora_alpha=8.0)
  params, layout = initial_params(c)
  rng = np.random.default_rng(0)
  params[lora.KEY] = jax.tree.map(
    lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.1, params[lora.KEY]
  )
  inputs = example_inputs(layout.model_cfg, 32, 0)
  _, seen = layout.model.apply(
    {"params": lora.merge(params, layout.tuning)}, *inputs, capture_intermediates=True
  )
  block = seen["intermediates"]["decoder"]["block_0"]
  x = np.asarray(block["attention_norm"]["__call__"][0], np.float64)  # [batch, length, embed]
  q = np.asarray(block["attention"]["query"]["__call__"][0], np.float64)
  p = flat(params)
  w, bias = p["decoder/block_0/attention/query/kernel"], p["decoder/block_0/attention/query/bias"]
  a, b = p["lora/decoder/block_0/attention/query/a"], p["lora/decoder/block_0/attention/query/b"]
  want = np.einsum("ble,ehd->blhd", x, w) + bias + 2.0 * ((x @ a) @ b).reshape(q.shape)
  np.testing.assert_allclose(q, want, atol=1e-5)


def test_lora_r8_on_query_and_value_trains_under_1_percent_of_gpt2_small():
  c = lora_config(gpt2.get_config("small"), lora_rank=8)
  layout = parts.build_layout(c)
  trained, total = finetune.count(layout.abstract.params, layout.tuning)
  # 12 blocks x (query + value) x (768 x 8 + 8 x 768) = 294,912 (PEFT's count for GPT-2).
  assert trained == 294_912 and total == trained + 124_439_808
  assert trained / total < 0.01


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("method", "adapter", "config.finetune.method='adapter' is not one of"),
    ("lora_targets", "attention/nothing$", "lora_targets='attention/nothing$' matches no kernel"),
    ("frozen_dtype", "float16", "config.finetune.frozen_dtype='float16'"),
    ("trainable", "(", "'(' is not a regular expression"),
  ],
)
def test_bad_finetune_settings_name_the_key(tiny_config, key, value, message):
  c = lora_config(tiny_config)
  c.finetune[key] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("$", r"\$")):
    initial_params(c)


def test_eval_scores_the_merged_model(tiny_config):
  """eval_step (and so `--mode=eval`) sees the adapters: with B != 0 its loss is the loss of
  the merged weights run as a plain model, not the base model's."""
  from jtrans import steps

  c = lora_config(tiny_config)
  params, layout = initial_params(c)
  params[lora.KEY] = jax.tree.map(lambda x: x + 0.05, params[lora.KEY])
  batch = next(iter(parts.make_dataset(c, train=False)))
  settings = steps.StepSettings.from_config(c)
  plain = dataclasses.replace(settings, finetune=None)
  merged = lora.merge(params, layout.tuning)
  base = {k: v for k, v in params.items() if k != lora.KEY}
  got = steps.eval_step(params, batch, model=layout.model, settings=settings, mesh=None)
  want = steps.eval_step(merged, batch, model=layout.model, settings=plain, mesh=None)
  other = steps.eval_step(base, batch, model=layout.model, settings=plain, mesh=None)
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  assert abs(float(got["loss"]) - float(other["loss"])) > 1e-3


def test_a_relaunch_that_stores_the_base_in_another_dtype_resumes(tiny_config, tmp_path):
  """The checkpoint is verified in the dtypes it was saved in, then cast: relaunching a
  bfloat16-base run with frozen_dtype="" resumes from its checkpoint (nothing quarantined as
  damaged) with the same base values, now float32."""
  from jtrans import checkpoint

  c = lora_config(tiny_config, frozen_dtype="bfloat16")
  c.train.steps = 3
  train.train(c, str(tmp_path))
  first = flat(saved(str(tmp_path))["params"])
  c.finetune.frozen_dtype, c.train.steps = "", 6
  train.train(c, str(tmp_path))
  assert not (tmp_path / checkpoint.DAMAGED_DIR).exists()
  after = flat(saved(str(tmp_path))["params"])
  for path, value in after.items():
    if not path.startswith("lora/"):
      assert value.dtype == np.float32, path
      np.testing.assert_array_equal(value, first[path].astype(np.float32), err_msg=path)


def test_the_finetune_config_names_its_argument_when_it_is_wrong():
  from configs import finetune as finetune_config

  for argument in ("path/to/gpt2", "path/to/gpt2,adapter", ",lora"):
    with pytest.raises(ValueError, match="give '<Hugging Face directory>,<method>'"):
      finetune_config.get_config(argument)


@pytest.mark.parametrize("scan", [False, True])
def test_lora_dropout_drops_the_adapters_input_only(tiny_config, tmp_path, scan):
  """LoRA dropout (`lora.place` under `lora.dropout`), on query, attention output and MLP
  input, unrolled and scanned: at a vanishing rate it is the merged model; at 0.5 its output
  depends on the dropout key; a run with lora_dropout=0.1 trains the adapters alone."""
  targets = "attention/(query|out)$|mlp/wi$"
  c = lora_config(tiny_config, targets, lora_dropout=0.1)
  c.model.scan_layers = scan
  params, layout = initial_params(c)
  rng = np.random.default_rng(0)
  params[lora.KEY] = jax.tree.map(
    lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.3, params[lora.KEY]
  )
  tokens = example_inputs(layout.model_cfg, 32, 0)[0]
  merged = np.asarray(layout.model.apply({"params": lora.merge(params, layout.tuning)}, tokens))
  placed = lora.place(params, layout.tuning)

  def dropped(rate, seed):
    with lora.dropout(rate):
      out = layout.model.apply(
        {"params": placed}, tokens, deterministic=False, rngs={"dropout": jax.random.key(seed)}
      )
    return np.asarray(out)

  np.testing.assert_allclose(dropped(1e-7, 0), merged, atol=2e-5, rtol=2e-5)
  first, second = dropped(0.5, 0), dropped(0.5, 1)
  assert np.abs(first - second).max() > 1e-2 and np.abs(first - merged).max() > 1e-2
  if scan:
    return
  c.model.scan_layers = False
  start, _ = initial_params(c)
  train.train(c, str(tmp_path))
  before, after = flat(start), flat(saved(str(tmp_path))["params"])
  for path, value in after.items():
    assert np.array_equal(value, before[path]) != path.startswith("lora/"), path
