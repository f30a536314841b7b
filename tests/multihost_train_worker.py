"""One process of a multi-process `train()` run, started by tests/multihost_test.py (not a test).

  python tests/multihost_train_worker.py WORKDIR PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES DATA_DIR

Trains the tiny LM of `config()` below on a data=2 x fsdp=2 mesh of all processes' devices
with `jtrans.train.train` itself (its data, evaluation, signals, metrics and checkpoints),
resuming from WORKDIR's checkpoint when there is one; process 0 writes the final parameters,
gathered whole, to WORKDIR/params.npz.
"""

import os
import sys

workdir, process_id, num_processes, port, local_devices = sys.argv[1], *map(int, sys.argv[2:6])
data_dir = sys.argv[6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

if num_processes > 1:
  jax.distributed.initialize(
    f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=60
  )

from configs import lm  # noqa: E402
from jtrans import train  # noqa: E402

STEPS = 300


def config():
  c = lm.get_config("tiny")
  c.data.data_dir = data_dir
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 1, 32, 2, 64
  c.model.max_len = c.data.seq_len = 32
  c.train.batch_size, c.train.steps, c.train.eval_batches = 8, STEPS, 4
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 10, 100, 100
  c.mesh.data, c.mesh.fsdp = 2, 2
  c.optim.warmup_steps, c.optim.eps = 10, 1e-6  # eps: see tests/sharding_test.py.
  c.sample.num_samples = 0
  return c


state = train.train(config(), workdir)
params = multihost_utils.process_allgather(state.params, tiled=True)  # Whole, on every host.
if jax.process_index() == 0:
  flat = {
    jax.tree_util.keystr(k): np.asarray(v)
    for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  np.savez(os.path.join(workdir, "params.npz"), step=int(state.step), **flat)
print(f"process {process_id} finished at step {int(state.step)}", flush=True)
