"""run.py --mode=compile: memory and FLOPs of a compiled step, without building the state."""
import pytest

from jtrans import aot
from tests.sharding_test import config


@pytest.fixture(scope="module")
def reports():
  return {name: aot.compile_report(config(**changes)) for name, changes in (
      ("data", {"mesh.data": 8}), ("fsdp", {"mesh.data": 1, "mesh.fsdp": 8}))}


def test_fsdp_shards_the_state_bytes(reports):
  data, fsdp = reports["data"], reports["fsdp"]
  # Parameters, two Adam moments and the batch: about 3 x 4 bytes per parameter per device.
  replicated_state = 12 * data["parameters"]
  assert data["argument_bytes"] >= replicated_state
  assert fsdp["argument_bytes"] < replicated_state / 8 * 1.2 + (data["argument_bytes"] - replicated_state)
  assert fsdp["total_bytes"] > 0 and fsdp["temp_bytes"] > 0


def test_compiled_flops_agree_with_the_model_count(reports):
  for report in reports.values():
    ratio = report["compiled_flops_per_device"] / report["model_flops_per_device"]
    assert 0.7 < ratio < 1.6, report


def test_report_reads(reports):
  text = aot.format_report(reports["fsdp"])
  assert "per device" in text and "total" in text and "FLOPs per step" in text
