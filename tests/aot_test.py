"""run.py --mode=compile: memory and FLOPs of a compiled step, without building the state, on
this host's devices or (with the libtpu wheel) for a Cloud TPU slice."""

import importlib.util
import os
import subprocess
import sys

import pytest

from jtrans import aot
from tests.sharding_test import config


@pytest.fixture(scope="module")
def reports():
  return {
    name: aot.compile_report(config(**changes))
    for name, changes in (("data", {"mesh.data": 8}), ("fsdp", {"mesh.data": 1, "mesh.fsdp": 8}))
  }


def test_fsdp_shards_the_state_bytes(reports):
  data, fsdp = reports["data"], reports["fsdp"]
  # Parameters, two Adam moments and the batch: about 3 x 4 bytes per parameter per device.
  replicated_state = 12 * data["parameters"]
  assert data["argument_bytes"] >= replicated_state
  assert fsdp["argument_bytes"] < replicated_state / 8 * 1.2 + (
    data["argument_bytes"] - replicated_state
  )
  assert fsdp["total_bytes"] > 0 and fsdp["temp_bytes"] > 0


def test_compiled_flops_agree_with_the_model_count(reports):
  for report in reports.values():
    ratio = report["compiled_flops_per_device"] / report["model_flops_per_device"]
    assert 0.7 < ratio < 1.6, report


def test_report_reads(reports):
  text = aot.format_report(reports["fsdp"])
  assert "per device" in text and "total" in text and "FLOPs per step" in text
  assert "estimated step" not in text  # No TPU topology, no cost-model time.
  # A TPU program XLA's cost model gives no time for (the post-LN Transformer and BERT base on
  # v5p, measured) says so instead of leaving the line out.
  tpu = {**reports["fsdp"], "topology": "v5p:2x2x2", "device_bytes_limit": 95 * 2**30}
  assert "estimated step: none (XLA's TPU cost model" in aot.format_report(tpu)


# ---------------------------------------------------------------- every objective's batch


def test_the_batch_spec_is_what_the_data_pipeline_yields(data_dir):
  """`objectives.batch_spec` (what --mode=compile compiles for) against a real first batch."""
  from configs import bert, lm, t5, vit
  from jtrans import objectives, parts
  from jtrans.models import ModelConfig

  cases = [
    lm.get_config("tiny"),
    bert.get_config("tiny"),
    t5.get_config("tiny"),
    vit.get_config("tiny"),
  ]
  cases[0].data.segment_ids = True
  for c in cases:
    c.data.data_dir = data_dir
    c.train.batch_size = 4
    batch = next(iter(parts.make_dataset(c, train=True)))
    spec = objectives.batch_spec(c, ModelConfig.from_config(c.model))
    assert {k: (v.shape, str(v.dtype)) for k, v in batch.items()} == spec, c.loss.objective


# ---------------------------------------------------------------- TPU pods, from this CPU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_for(topology: str, *args: str) -> str:
  out = subprocess.run(
    [sys.executable, "run.py", "--mode=compile", f"--topology={topology}", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs the libtpu wheel")
def test_t5_compiles_for_a_v4_slice():
  """A seq2seq step (source and target batches) on v4's megacore chips; the Llama one on v5p is
  the README's command (tests/readme_test.py)."""
  t5 = compile_for("v4:2x2x1", "--config=configs/t5.py:tiny")
  assert "seq2seq train step for TPU v4 x 4 (v4:2x2x1), mesh {'data': 4" in t5
  assert "device memory 32.000 GiB: the step fits" in t5 and "MFU" in t5


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs the libtpu wheel")
def test_a_config_too_big_for_its_slice_says_so():
  out = compile_for(
    "v5e:2x2",
    "--config=configs/llama.py:7b",
    "--config.train.batch_size=8",
    "--config.data.seq_len=1024",
  )
  assert "the step does NOT fit. XLA: Ran out of memory" in out and "shard it further" in out


def test_a_busy_libtpu_names_the_way_out(monkeypatch):
  """Another jax process holding libtpu (a training run beside the compile) is not a missing
  wheel: the error says to wait or set ALLOW_MULTIPLE_LIBTPU_LOAD=1."""
  from jax.experimental import topologies

  def busy(**kwargs):
    raise RuntimeError("ABORTED: Internal error when accessing libtpu multi-process lockfile.")

  monkeypatch.setattr(topologies, "get_topology_desc", busy)
  with pytest.raises(RuntimeError, match=r"another process.*ALLOW_MULTIPLE_LIBTPU_LOAD=1"):
    aot.topology_devices("v5p:2x2x1")
