"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) match one 4-device process."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np

from jtrans import checkpoint, optim, parts, sharding
from jtrans.models import build_model
from tests.sharding_test import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TRAIN_WORKER = os.path.join(ROOT, "tests", "multihost_train_worker.py")
TIMEOUT = 240


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(out, process_id, num_processes, port, local_devices, *extra, worker=WORKER):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen(
    [
      sys.executable,
      worker,
      str(out),
      str(process_id),
      str(num_processes),
      str(port),
      str(local_devices),
      *map(str, extra),
    ],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


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
  _, _, abstract = parts.state_layout(
    build_model(c.model), optim.make_optimizer(c.optim, 10), c, mesh
  )
  restored, step = checkpoint.restore(
    checkpoint.make_manager(str(tmp_path / "pair"), c.train), abstract
  )
  embedding = np.asarray(restored.params["embed"]["token_embed"]["embedding"])
  np.testing.assert_allclose(embedding, want["['embed']['token_embed']['embedding']"], atol=1e-5)
  assert step == 3 and int(restored.step) == 3


def launch_train(workdir, num_processes, local_devices, data_dir):
  port = free_port()
  return [
    launch(workdir, i, num_processes, port, local_devices, data_dir, worker=TRAIN_WORKER)
    for i in range(num_processes)
  ]


def test_train_on_two_processes_is_preempted_resumes_on_two_or_one_and_equals_one_process(
  data_dir, tmp_path
):
  """`train()` itself on 2 processes x 2 devices (per-process rows of one global batch, padded
  evaluation, SIGTERM agreement, process-0 metrics, the joint checkpoint): SIGTERM at step ~50,
  then resumed on 2 processes, and a copy resumed on 1 process of 4 devices. All end equal
  to the uninterrupted 1-process run."""
  finish(launch_train(tmp_path / "single", 1, 4, data_dir))
  # A data_dir where the corpus is not prepared yet: process 0 builds it while process 1 waits.
  fresh = tmp_path / "tfds"
  pair = launch_train(tmp_path / "pair", 2, 2, fresh)
  try:
    for line in pair[0].stdout:  # Process 0 logs; a pod's pre-emption reaches every host.
      if line.startswith("step 50/"):
        break
    for p in pair:
      p.send_signal(signal.SIGTERM)
  finally:
    outputs = finish(pair)
  assert "signal 15 received: saved a checkpoint at step" in outputs[0], outputs[0][-3000:]
  saved = int(outputs[0].split("saved a checkpoint at step ")[1].split(";")[0])
  assert 50 <= saved < 300
  shutil.copytree(tmp_path / "pair", tmp_path / "fewer")
  resumed = finish(launch_train(tmp_path / "pair", 2, 2, fresh))
  assert f"resumed from step {saved}" in resumed[0]
  fewer = finish(launch_train(tmp_path / "fewer", 1, 4, fresh))
  assert f"resumed from step {saved}" in fewer[0]

  want = np.load(tmp_path / "single" / "params.npz")
  assert len(want.files) > 5
  for run in ("pair", "fewer"):
    got = np.load(tmp_path / run / "params.npz")
    assert int(got["step"]) == 300 and set(got.files) == set(want.files)
    for name in want.files:
      np.testing.assert_allclose(
        got[name], want[name], atol=1e-5, rtol=1e-5, err_msg=f"{run} {name}"
      )
  records = [json.loads(line) for line in open(tmp_path / "pair" / "metrics.jsonl")]
  logged = [r["step"] for r in records if r["split"] == "train" and "loss" in r]
  assert logged == list(range(10, 301, 10))  # Process 0 wrote each step once.
  assert len(list((fresh / "jtrans_cache").iterdir())) == 1  # The eval entropy, computed once.
