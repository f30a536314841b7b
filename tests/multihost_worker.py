"""One process of a multi-process run, started by tests/multihost_test.py (not a test itself).

  python tests/multihost_worker.py OUT PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES

Trains 3 steps of the sharding tests' model on a data=2 x fsdp=2 mesh of all processes'
devices, each process placing only its own rows of the global batch, saves an Orbax checkpoint with every
process, and (process 0) writes the losses and gathered parameters to OUT/result.npz.
"""

import os
import sys

out, process_id, num_processes, port, local_devices = sys.argv[1], *map(int, sys.argv[2:])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

if num_processes > 1:
  jax.distributed.initialize(
    f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=60
  )

from jtrans import checkpoint, optim, parts, sharding, steps  # noqa: E402
from jtrans.models import build_model  # noqa: E402
from tests.sharding_test import batches, config  # noqa: E402

if num_processes == 2:
  # Multi-slice layout: each process is a slice; only the data axis crosses between them.
  hybrid = sharding.make_mesh(config(**{"mesh.data": 1, "mesh.fsdp": 2, "mesh.dcn_data": 2}).mesh)
  assert dict(hybrid.shape) == {"data": 2, "fsdp": 2, "tensor": 1}, hybrid.shape
  for i in range(2):
    assert {d.process_index for d in hybrid.devices[i].flat} == {i}, hybrid.devices

c = config(**{"mesh.data": 2, "mesh.fsdp": 2})
mesh = sharding.make_mesh(c.mesh)
assert mesh.size == 4 and jax.process_count() == num_processes
model = build_model(c.model)
tx = optim.make_optimizer(c.optim, c.train.steps)
state, shardings, _ = parts.init_state(model, tx, c, mesh)
engine = steps.make_engine(model, tx, c, mesh, shardings)
losses = []
with engine.context():
  for batch in batches(c):
    state, metrics = engine.train_step(state, engine.place_batch(batch))
    losses.append(float(metrics["loss"]))

c.train.checkpoint_every = 1
manager = checkpoint.make_manager(out, c.train)
manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
manager.wait_until_finished()
params = multihost_utils.process_allgather(state.params, tiled=True)
if jax.process_index() == 0:
  flat = {
    jax.tree_util.keystr(k): np.asarray(v)
    for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  np.savez(os.path.join(out, "result.npz"), losses=np.array(losses), **flat)
print(f"process {process_id} done", flush=True)
