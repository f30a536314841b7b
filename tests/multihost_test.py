"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) match one 4-device process."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from jtrans import checkpoint, optim, sharding, train
from jtrans.models import build_model
from tests.sharding_test import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TIMEOUT = 240


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(out, process_id, num_processes, port, local_devices):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen([sys.executable, WORKER, str(out), str(process_id), str(num_processes),
                           str(port), str(local_devices)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs):
  """Waits for every process (bounded); kills any left; returns their outputs."""
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=TIMEOUT)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, text in zip(procs, outputs):
    assert p.returncode == 0, text[-4000:]
  return outputs


def test_two_processes_match_one_process(tmp_path):
  port = free_port()
  pair = [launch(tmp_path / "pair", i, 2, port, 2) for i in range(2)]
  single = [launch(tmp_path / "single", 0, 1, 0, 4)]
  finish(pair + single)
  assert all(p.poll() is not None for p in pair + single), "a worker was left running"

  got, want = np.load(tmp_path / "pair" / "result.npz"), np.load(tmp_path / "single" / "result.npz")
  assert set(got.files) == set(want.files) and len(got.files) > 5
  for name in want.files:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5, err_msg=name)

  # The checkpoint the two processes wrote together restores here, whole.
  c = config(**{"mesh.data": 1})
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  _, _, abstract = train.state_layout(build_model(c.model), optim.make_optimizer(c.optim, 10), c, mesh)
  restored, step = checkpoint.restore(checkpoint.make_manager(str(tmp_path / "pair"), c.train), abstract)
  embedding = np.asarray(restored.params["embed"]["token_embed"]["embedding"])
  np.testing.assert_allclose(embedding, want["['embed']['token_embed']['embedding']"], atol=1e-5)
  assert step == 3 and int(restored.step) == 3
