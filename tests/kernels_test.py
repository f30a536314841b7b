"""jtrans/kernels.py: Splash attention (run here in Pallas's interpreter) against float64 numpy,
outputs and gradients; the fallback to blockwise, with its log line, for what a kernel cannot
take; "auto" resolved by the chips; and the TPU kernel compiled into a train step for a v5e
slice (the AOT path of `--mode=compile --topology`). cuDNN runs only on an NVIDIA GPU: here its
support rules are checked, and benchmarks/attention.py --impl=cudnn exercises it on one."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from jtrans import attention, kernels, masks
from tests.blockwise_test import inputs, reference, segments

T = 256  # Splash tiles lengths in multiples of 128.


@pytest.mark.parametrize(
  "name, kv_heads",
  [("causal", 4), ("causal_segments", 2), ("window", 1), ("full_segments", 4)],
)
def test_splash_equals_the_float64_reference(name, kv_heads):
  q, k, v = inputs(T, T, kv_heads, seed=3)
  seg = jnp.asarray(np.where(segments(T, 2) == 0, 99, segments(T, 2)))  # No padding ids.
  spec = {
    "causal": masks.MaskSpec(causal=True),
    "causal_segments": masks.MaskSpec(seg, seg, causal=True),
    "window": masks.MaskSpec(causal=True, window=(40, 0)),
    "full_segments": masks.MaskSpec(seg, seg),
  }[name]
  dout = np.random.default_rng(9).normal(size=q.shape).astype(np.float32)

  def f(q, k, v):
    out = kernels.splash_attention(q, k, v, spec, interpret=True)
    return jnp.sum(out * dout), out

  (dq, dk, dv), out = jax.grad(f, (0, 1, 2), has_aux=True)(*map(jnp.asarray, (q, k, v)))
  want = reference(q, k, v, np.asarray(spec.dense(T, T)), None, dout)
  for got, w, what in zip((out, dq, dk, dv), want, ("out", "dq", "dk", "dv")):
    np.testing.assert_allclose(np.asarray(got), w, atol=1e-5, err_msg=what)


def test_what_a_kernel_cannot_take_runs_blockwise_and_says_why(monkeypatch):
  """A bias (T5) and a length of 100 are not Splash's: the entry point logs one line naming
  the reason and returns the blockwise result."""
  said = []
  monkeypatch.setattr(logging, "warning", lambda msg, *args: said.append(msg % args))
  kernels._logged.clear()
  q, k, v = inputs(100, 100, 2, seed=4)
  bias = jnp.asarray(np.random.default_rng(5).normal(size=(1, 4, 100, 100)), jnp.float32)
  spec = masks.MaskSpec(causal=True)
  for b in (None, bias, bias):
    got = attention.attention(q, k, v, spec, b, implementation="splash")
    want = attention.attention(q, k, v, spec, b, implementation="blockwise")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert said == [
    "attention: splash cannot run lengths 100 x 100 (it needs multiples of 128); using "
    "attention_impl=blockwise.",
    "attention: splash cannot run a logits bias (T5's relative positions); using "
    "attention_impl=blockwise.",
  ]


def test_cudnn_takes_half_precision_without_segments():
  q16 = jnp.zeros((2, 64, 4, 64), jnp.bfloat16)
  causal = masks.MaskSpec(causal=True, window=(16, 0))
  assert kernels.cudnn_unsupported(q16, q16, causal, None) is None
  assert "float32" in kernels.cudnn_unsupported(q16.astype(jnp.float32), q16, causal, None)
  packed = masks.MaskSpec(jnp.ones((2, 64), jnp.int32), jnp.ones((2, 64), jnp.int32))
  assert "segment ids" in kernels.cudnn_unsupported(q16, q16, packed, None)
  bigbird = masks.MaskSpec(sparse=masks.Sparse(block=16))
  assert "BigBird" in kernels.cudnn_unsupported(q16, q16, bigbird, None)
  wide = jnp.zeros((2, 64, 1, 136), jnp.bfloat16)
  assert "head_dim 136" in kernels.cudnn_unsupported(wide, wide, causal, None)


def test_auto_is_the_kernel_of_the_chips_the_step_is_compiled_for():
  assert [kernels.resolve("auto", p) for p in ("tpu", "gpu", "cpu")] == [
    "splash",
    "cudnn",
    "blockwise",
  ]
  assert kernels.resolve("xla", "tpu") == "xla"
  from configs import lm
  from jtrans import parts, sharding

  config = lm.get_config("tiny")
  config.model.attention_impl = "auto"
  assert parts.validate(config, sharding.make_mesh(config.mesh)).attention_impl == "blockwise"


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs the libtpu wheel")
def test_auto_compiles_splash_into_a_v5e_train_step():
  """The tiny decoder at T=1024 on a v5e:2x2 slice, heads split over tensor=2, packed
  documents, scanned layers: "auto" is Splash inside a shard_map, and the compiled step holds
  its forward, dq and dkv kernels (Mosaic custom calls)."""
  from tests.aot_test import compile_for

  out = compile_for(
    "v5e:2x2",
    "--config=configs/lm.py:tiny",
    "--config.model.attention_impl=auto",
    "--config.data.seq_len=1024",
    "--config.model.max_len=1024",
    "--config.mesh.tensor=2",
    "--config.data.segment_ids=True",
  )
  assert "attention splash: 12 fused kernel calls" in out, out
  assert "the step fits" in out
