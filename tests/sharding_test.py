"""One train step for any mesh: every mesh, engine and memory lever gives the single-device numbers."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import lm
from jtrans import checkpoint, optim, parts, sharding, steps
from jtrans.models import build_model

TOL = 1e-5


def config(**changes):
  c = lm.get_config("tiny")
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 2, 32, 4, 64
  c.model.max_len = c.data.seq_len = 16
  c.train.batch_size, c.train.steps = 16, 10
  c.optim.warmup_steps = 1
  # Adam divides by sqrt(v) + eps: with the default 1e-8, a gradient element near zero turns
  # float32 summation-order noise into a visible update. 1e-6 keeps the comparison about
  # sharding, not about that conditioning.
  c.optim.eps = 1e-6
  for key, value in changes.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def batches(c, n=3):
  """The same random batch n times (so the loss must fall), 10% of tokens weighted 0."""
  rng = np.random.default_rng(0)
  shape = (c.train.batch_size, c.data.seq_len)
  batch = {
    "inputs": rng.integers(3, 259, shape, dtype=np.int32),
    "targets": rng.integers(3, 259, shape, dtype=np.int32),
    "weights": (rng.random(shape) > 0.1).astype(np.float32),
  }
  return [batch] * n


def devices(n):
  return jax.devices()[:n]


def run(c, mesh, state=None):
  """(losses, final global state) of 3 steps on fixed batches."""
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  init_state, shardings, _ = parts.init_state(model, tx, c, mesh)
  # A host copy: the engine donates its input, and the caller may use `state` again.
  state = init_state if state is None else jax.device_put(jax.device_get(state), shardings)
  return train_3_steps(c, steps.make_engine(model, tx, c, mesh, shardings), state)


def train_3_steps(c, engine, state):
  placed, losses = engine.place_state(state), []
  with engine.context():
    for batch in batches(c):
      placed, metrics = engine.train_step(placed, engine.place_batch(batch))
      losses.append(float(metrics["loss"]))
  return np.array(losses), engine.global_state(placed)


def assert_close(a, b, tol=TOL):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol), a, b
  )


@pytest.fixture(scope="module")
def single_device():
  c = config(**{"mesh.data": 1})
  return run(c, sharding.make_mesh(c.mesh, devices(1)))


@pytest.mark.parametrize(
  "data, fsdp, tensor", [(8, 1, 1), (1, 8, 1), (4, 1, 2), (1, 2, 4), (2, 2, 2)]
)
def test_every_mesh_matches_one_device(single_device, data, fsdp, tensor):
  c = config(**{"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor})
  losses, state = run(c, sharding.make_mesh(c.mesh))
  np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
  assert_close(state.params, single_device[1].params)
  assert losses[-1] < losses[0]


def test_fsdp_shards_parameters_and_optimizer_state():
  c = config(**{"mesh.data": 1, "mesh.fsdp": 8})
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  state, _, _ = parts.init_state(model, tx, c, sharding.make_mesh(c.mesh))
  first = jax.devices()[0]
  total = held = replicated = 0
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    total += leaf.nbytes
    held += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == first)
    if leaf.sharding.is_fully_replicated:
      replicated += leaf.nbytes
  assert held <= total / 8 + replicated, (held, total, replicated)
  assert replicated < 0.05 * total, "the replicated remainder should be small"
  embedding = state.params["embed"]["token_embed"]["embedding"]
  assert embedding.addressable_shards[0].data.shape == (259, 32 // 8)


def test_pmap_engine_matches_jit(single_device):
  c = config(**{"mesh.data": 8, "train.engine": "pmap"})
  losses, state = run(c, sharding.make_mesh(c.mesh))
  np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
  assert_close(state.params, single_device[1].params)


def test_pmap_engine_refuses_model_parallel_meshes():
  c = config(**{"mesh.data": 4, "mesh.tensor": 2, "train.engine": "pmap"})
  with pytest.raises(ValueError, match="config.train.engine='pmap'"):
    run(c, sharding.make_mesh(c.mesh))


def test_gradient_accumulation_matches_one_big_batch(single_device):
  c = config(**{"mesh.data": 8, "train.grad_accum_steps": 4})
  losses, state = run(c, sharding.make_mesh(c.mesh))
  np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
  assert_close(state.params, single_device[1].params)


def test_remat_matches_no_remat(single_device):
  for policy in ("full", "dots_saveable"):
    c = config(**{"mesh.data": 1, "model.remat": policy})
    losses, state = run(c, sharding.make_mesh(c.mesh, devices(1)))
    np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
    assert_close(state.params, single_device[1].params)


def stack_layers(params, num_layers):
  """Unrolled `decoder/block_i/...` parameters -> scanned `decoder/layers/block/...` ([layers, ...])."""
  decoder = params["decoder"]
  blocks = [decoder[f"block_{i}"] for i in range(num_layers)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  rest = {k: v for k, v in decoder.items() if not k.startswith("block_")}
  return {**params, "decoder": {**rest, "layers": {"block": stacked}}}


def test_scan_over_layers_matches_unrolled(single_device):
  c = config(**{"mesh.data": 1, "model.scan_layers": True})
  mesh = sharding.make_mesh(c.mesh, devices(1))
  tx = optim.make_optimizer(c.optim, c.train.steps)
  reference = config(**{"mesh.data": 1})
  unrolled, _, _ = parts.init_state(build_model(reference.model), tx, reference, mesh)
  params = stack_layers(jax.device_get(unrolled.params), c.model.num_layers)
  start = steps.TrainState(step=unrolled.step, params=params, opt_state=tx.init(params))
  losses, state = run(c, mesh, start)
  np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
  assert_close(state.params, stack_layers(jax.device_get(single_device[1].params), 2))


def test_checkpoint_from_fsdp8_restores_on_4_and_1_devices(tmp_path):
  c8 = config(**{"mesh.data": 1, "mesh.fsdp": 8})
  _, state8 = run(c8, sharding.make_mesh(c8.mesh))
  c8.train.checkpoint_every = 1
  manager = checkpoint.make_manager(str(tmp_path), c8.train)
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state8)))
  manager.wait_until_finished()
  saved = jax.device_get(state8)
  want_losses, want = run(c8, sharding.make_mesh(c8.mesh), state8)  # 3 more steps on fsdp=8.
  for n, mesh_changes in ((4, {"mesh.data": 4}), (1, {"mesh.data": 1})):
    c = config(**mesh_changes)
    mesh = sharding.make_mesh(c.mesh, devices(n))
    model = build_model(c.model)
    tx = optim.make_optimizer(c.optim, c.train.steps)
    _, _, abstract = parts.state_layout(model, tx, c, mesh)
    restored, step = checkpoint.restore(checkpoint.make_manager(str(tmp_path), c.train), abstract)
    assert step == 3 and int(restored.step) == 3
    assert {d.id for d in jax.tree.leaves(restored.params)[0].devices()} == {
      d.id for d in devices(n)
    }
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
    # Training continues from it: a further 3 steps match the same steps on the fsdp=8 mesh.
    losses, after = run(c, mesh, restored)
    np.testing.assert_allclose(losses, want_losses, atol=TOL, rtol=TOL)
    assert_close(after.params, want.params)


@pytest.mark.parametrize(
  "changes, other_draws",
  [
    ({"model.dropout_rate": 0.1}, {"model.dropout_rate": 0.0}),
    ({"model.family": "encoder", "loss.objective": "mlm"}, {"loss.mask_rate": 0.3}),
  ],
  ids=["dropout", "masked_lm"],
)
def test_pmap_and_jit_draw_the_same_dropout_and_masks(changes, other_draws):
  """The same global rows get the same randomness: one device, 8-way jit, 8-way pmap and (with
  dropout; masking draws through the same per-row keys) 4 micro-batches all agree, with
  dropout 0.1 or BERT's masking."""
  one = run(
    config(**changes), sharding.make_mesh(config(**{**changes, "mesh.data": 1}).mesh, devices(1))
  )
  extras = [{"mesh.data": 8}, {"mesh.data": 8, "train.engine": "pmap"}]
  if "model.dropout_rate" in changes:
    extras.append({"mesh.data": 8, "train.grad_accum_steps": 4})
  for extra in extras:
    other = config(**changes, **extra)
    losses, state = run(other, sharding.make_mesh(other.mesh))
    np.testing.assert_allclose(losses, one[0], atol=TOL, rtol=TOL, err_msg=str(extra))
    assert_close(state.params, one[1].params)
  # And the draws matter: without dropout (or with other masks) the same model's losses differ.
  drawn_otherwise = config(**{**changes, **other_draws, "mesh.data": 1})
  assert (
    abs(
      one[0][0] - run(drawn_otherwise, sharding.make_mesh(drawn_otherwise.mesh, devices(1)))[0][0]
    )
    > 1e-4
  )


BLOCKWISE = {
  "model.attention_impl": "blockwise",
  "model.attention_block_q": 8,
  "model.attention_block_kv": 8,
}  # Length 16: two blocks each way.


@pytest.mark.parametrize("scan", [False, True])
def test_blockwise_attention_with_heads_split_and_remat_matches_one_dense_device(
  single_device, scan
):
  """Blockwise attention on a (data 2, fsdp 2, tensor 2) mesh, heads split over tensor, every
  block rematerialised, optionally scanned: the single-device dense run's numbers."""
  c = config(
    **BLOCKWISE,
    **{
      "mesh.data": 2,
      "mesh.fsdp": 2,
      "mesh.tensor": 2,
      "model.remat": "full",
      "model.scan_layers": scan,
    },
  )
  mesh = sharding.make_mesh(c.mesh)
  start = None
  if scan:
    tx = optim.make_optimizer(c.optim, c.train.steps)
    reference = config(**{"mesh.data": 1})
    one = sharding.make_mesh(reference.mesh, devices(1))
    unrolled, _, _ = parts.init_state(build_model(reference.model), tx, reference, one)
    params = stack_layers(jax.device_get(unrolled.params), c.model.num_layers)
    start = steps.TrainState(step=unrolled.step, params=params, opt_state=tx.init(params))
  losses, state = run(c, mesh, start)
  np.testing.assert_allclose(losses, single_device[0], atol=TOL, rtol=TOL)
  want = single_device[1].params
  assert_close(state.params, stack_layers(jax.device_get(want), 2) if scan else want)


def run_layout(c, mesh):
  """`run` with the model, optimizer and shardings parts.build_layout makes (fine-tuning's)."""
  layout = parts.build_layout(c, mesh)
  state = jax.jit(layout.init, out_shardings=layout.shardings)(jax.random.key(c.seed))
  return train_3_steps(
    c, steps.make_engine(layout.model, layout.tx, c, mesh, layout.shardings), state
  )


def test_lora_steps_match_one_device_on_every_engine_and_mesh():
  """A LoRA run (bfloat16 frozen base, gradient accumulation) gives one device's losses and
  adapters under FSDP x tensor parallelism and under pmap; the base stays bitwise unchanged."""
  lora_settings = {
    "finetune.method": "lora",
    "finetune.lora_targets": "attention/(query|value)$|mlp/wo$",
    "finetune.frozen_dtype": "bfloat16",
    "train.grad_accum_steps": 2,
  }
  c = config(**lora_settings, **{"mesh.data": 1})
  want_losses, want = run_layout(c, sharding.make_mesh(c.mesh, devices(1)))
  assert want_losses[-1] < want_losses[0]
  for extra in (
    {"mesh.fsdp": 2, "mesh.tensor": 2, "mesh.data": 2},
    {"mesh.data": 8, "train.engine": "pmap"},
  ):
    c = config(**lora_settings, **extra)
    losses, state = run_layout(c, sharding.make_mesh(c.mesh))
    np.testing.assert_allclose(losses, want_losses, atol=TOL, rtol=TOL)
    assert_close(state.params["lora"], want.params["lora"])
    base = lambda s: {k: v for k, v in s.params.items() if k != "lora"}  # noqa: E731
    jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(base(state)), jax.device_get(base(want))
    )
