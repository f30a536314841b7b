"""Ahead-of-time check: compile the train step for a mesh, train nothing, report memory and FLOPs.

`run.py --mode=compile` prints this, so a user sees whether a config fits its devices before
paying for them. The state is never built: shapes and shardings come from `eval_shape`.
"""
from __future__ import annotations

import time

import jax
import ml_collections

from jtrans import flops, optim, sharding, steps, train
from jtrans.models import build_model


def compile_report(config: ml_collections.ConfigDict) -> dict[str, float | str]:
  """Per-device bytes (arguments, outputs, temporaries) and FLOPs of one compiled train step."""
  mesh = sharding.make_mesh(config.mesh)
  model_cfg = train.validate(config, mesh)
  model = build_model(model_cfg)
  tx = optim.make_optimizer(config.optim, config.train.steps)
  _, shardings, abstract = train.state_layout(model, tx, config, mesh)
  train_fn = steps.jit_engine(model, tx, config, mesh, shardings).train_step
  shape = (config.train.batch_size, config.data.seq_len)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
           for k, dtype in (("inputs", "int32"), ("targets", "int32"), ("weights", "float32"))}
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = train_fn.lower(abstract, batch).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  tokens = shape[0] * shape[1]
  params = sum(x.size for x in jax.tree.leaves(abstract.params))
  report = {
      "device": f"{mesh.devices.flat[0].device_kind} x {mesh.size}",
      "mesh": str(dict(mesh.shape)),
      "parameters": params,
      "compile_seconds": seconds,
      "argument_bytes": memory.argument_size_in_bytes,
      "output_bytes": memory.output_size_in_bytes,
      "temp_bytes": memory.temp_size_in_bytes,
      "alias_bytes": memory.alias_size_in_bytes,
      "generated_code_bytes": memory.generated_code_size_in_bytes,
      "compiled_flops_per_device": float(cost.get("flops", 0.0)),
      "model_flops_per_device": flops.train_flops_per_token(model_cfg, shape[1]) * tokens / mesh.size,
  }
  # Donated state aliases its outputs, so it is counted once.
  report["total_bytes"] = (report["argument_bytes"] + report["output_bytes"] + report["temp_bytes"]
                           - report["alias_bytes"])
  stats = mesh.devices.flat[0].memory_stats() or {}
  report["device_bytes_limit"] = stats.get("bytes_limit", 0)
  return report


def format_report(report: dict) -> str:
  gib = lambda b: f"{b / 2**30:.3f} GiB"  # noqa: E731
  lines = [f"train step compiled for {report['device']}, mesh {report['mesh']}, "
           f"{report['parameters']:,} parameters, in {report['compile_seconds']:.1f}s",
           "per device:",
           f"  arguments (state + batch) {gib(report['argument_bytes'])}",
           f"  outputs                   {gib(report['output_bytes'])}",
           f"  temporaries               {gib(report['temp_bytes'])}",
           f"  donated (aliased)         -{gib(report['alias_bytes'])}",
           f"  total                     {gib(report['total_bytes'])}",
           f"  FLOPs per step: compiled {report['compiled_flops_per_device']:.3e}, "
           f"model (6N + attention) {report['model_flops_per_device']:.3e}"]
  limit = report["device_bytes_limit"]
  if limit:
    verdict = "fits" if report["total_bytes"] <= limit else "does NOT fit"
    lines.append(f"  device memory {gib(limit)}: the step {verdict}")
  return "\n".join(lines)
