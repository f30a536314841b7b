"""Shared fixtures. Tests run on 8 simulated CPU devices, as a small pod would shard them."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# With the libtpu wheel installed (for the TPU compile tests), jax would otherwise try to open
# a TPU here and hold libtpu's lock file, which the --topology subprocesses then cannot take.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `make test` runs two pytest workers (pytest-xdist); the TPU compiles of both may then hold
# libtpu at once, which its lock file refuses unless told otherwise.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# One persistent compilation cache for the session and every run.py subprocess it starts: the
# many launches of the same tiny configs (resume, export, eval, generate) compile each program
# once. The executables are the same ones, so results are unchanged; only the time goes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jtrans-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from configs import lm  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir with the embedded corpus prepared once per session (nothing downloaded)."""
  from jtrans.data import sources

  path = str(tmp_path_factory.mktemp("tfds"))
  sources.load_source("pydoc_topics", "train", path)
  return path


@pytest.fixture
def tiny_config(data_dir):
  """A model small enough that a few steps take well under a second, on the test corpus."""
  c = lm.get_config("tiny")
  c.data.data_dir = data_dir
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.mlp_dim = 1, 32, 2, 64
  c.model.max_len = c.data.seq_len = 32
  c.train.batch_size, c.train.steps = 8, 6
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 2, 3, 3
  c.train.eval_batches = 2
  c.optim.warmup_steps = 2
  c.sample.num_samples = 0
  return c
