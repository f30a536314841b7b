"""Ahead-of-time check: compile the train step for a mesh, train nothing, report memory and FLOPs.

`run.py --mode=compile` prints this, so a user sees whether a config fits its devices before
paying for them. The state is never built: shapes and shardings come from `eval_shape`, and
the batch's from the objective (`objectives.batch_spec`).

With `--topology=v5p:4x4x4` (or a v4, v5e, v6e name) the step is compiled for that TPU pod
slice's chips from any machine, CPU-only included: `jax.experimental.topologies` describes the
slice and the `libtpu` wheel that matches jax compiles for it (`pip install "jax[tpu]"`).
XLA's cost model then estimates the step's seconds, hence tokens/s and MFU on the pod.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import ml_collections

from jtrans import finetune, flops, objectives, parts, sharding, steps

# Per chip: HBM bytes and peak dense bf16 FLOP/s, from Google's Cloud TPU system architecture
# pages (v4: 32 GiB, 275 TFLOP/s; v5e: 16 GiB, 197; v5p: 95 GiB, 459; v6e: 32 GiB, 918).
TPU_CHIPS = {
  "v4": (32 * 2**30, 275e12),
  "v5e": (16 * 2**30, 197e12),
  "v5p": (95 * 2**30, 459e12),
  "v6e": (32 * 2**30, 918e12),
}


def topology_devices(topology: str) -> Sequence[jax.Device]:
  """The chips of TPU slice `topology` ("v5p:4x4x4", "v4:2x2x1", "v6e:4x4", ...), to compile for."""
  generation = topology.split(":")[0]
  if generation not in TPU_CHIPS or ":" not in topology:
    raise ValueError(
      f"--topology={topology!r}: expected <generation>:<chips per axis>, with a "
      f"generation among {sorted(TPU_CHIPS)}, e.g. v5p:4x4x4 or v6e:4x4."
    )
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

    # v4 and v5p chips have two TensorCores that jax drives as one device ("megacore").
    megacore = {"chip_config_name": "megacore"} if generation in ("v4", "v5p") else {}
    return topologies.get_topology_desc(platform="tpu", topology_name=topology, **megacore).devices
  except Exception as e:  # pylint: disable=broad-except  (libtpu missing, or a bad shape)
    if "lockfile" in str(e):  # Another jax process on this host holds libtpu.
      raise RuntimeError(
        f"--topology={topology!r}: another process on this machine holds libtpu ({e}). Wait "
        "for it to finish, or let both load it: ALLOW_MULTIPLE_LIBTPU_LOAD=1 python run.py ..."
      ) from e
    raise RuntimeError(
      f"--topology={topology!r}: cannot describe that TPU slice ({type(e).__name__}: {e}). "
      "Compiling for TPU needs the libtpu wheel that matches jax: pip install "
      f'"jax[tpu]=={jax.__version__}"; the slice must be one Cloud TPU offers.'
    ) from e


def compile_report(
  config: ml_collections.ConfigDict, topology: str | None = None
) -> dict[str, float | str]:
  """Per-device bytes (arguments, outputs, temporaries), FLOPs and, on a TPU `topology`,
  estimated seconds, tokens/s and MFU of one compiled train step."""
  devices = topology_devices(topology) if topology else None
  mesh = sharding.make_mesh(config.mesh, devices)
  layout = parts.build_layout(config, mesh)  # Compiles from shapes alone: reads no data.
  train_fn = steps.jit_engine(layout.model, layout.tx, config, mesh, layout.shardings).train_step
  batch_sharding = sharding.batch_sharding(mesh)
  spec = objectives.batch_spec(config, layout.model_cfg)
  batch = {
    k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
    for k, (shape, dtype) in spec.items()
  }
  positions = objectives.positions_per_example(config, layout.model_cfg)
  tokens = config.train.batch_size * positions
  report = {
    "device": f"{mesh.devices.flat[0].device_kind} x {mesh.size}",
    "topology": topology or "",
    "objective": config.loss.objective,
    "mesh": str(dict(mesh.shape)),
    "parameters": sum(x.size for x in jax.tree.leaves(layout.abstract.params)),
    "tokens_per_step": tokens,
  }
  start = time.perf_counter()
  try:
    with jax.set_mesh(mesh):
      compiled = train_fn.lower(layout.abstract, batch).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    # The TPU compiler refuses a program that cannot fit; its message says by how much.
    report["out_of_memory"] = str(e).split("RESOURCE_EXHAUSTED:", 1)[1].strip().split("\n")[0]
    report["compile_seconds"] = time.perf_counter() - start
    return report
  report["compile_seconds"] = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  hlo = compiled.as_text()
  report["attention"] = layout.model_cfg.attention_impl  # "auto" resolved for the chips.
  # Mosaic (Splash) and cuDNN attention kernels are custom calls in the compiled step.
  report["fused_attention_calls"] = hlo.count('custom_call_target="tpu_custom_call"') + hlo.count(
    'custom_call_target="__cudnn$fmha'
  )
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report |= {
    "argument_bytes": memory.argument_size_in_bytes,
    "output_bytes": memory.output_size_in_bytes,
    "temp_bytes": memory.temp_size_in_bytes,
    "alias_bytes": memory.alias_size_in_bytes,
    "generated_code_bytes": memory.generated_code_size_in_bytes,
    "compiled_flops_per_device": float(cost.get("flops", 0.0)),
    "model_flops_per_device": (
      flops.train_flops_per_token(
        layout.model_cfg, positions, finetune.trained_share(layout.abstract.params, layout.tuning)
      )
      * tokens
      / mesh.size
    ),
    "step_seconds": float(cost.get("optimal_seconds", 0.0)),  # XLA's TPU cost model only.
  }
  # Donated state aliases its outputs, so it is counted once.
  report["total_bytes"] = (
    report["argument_bytes"] + report["output_bytes"] + report["temp_bytes"] - report["alias_bytes"]
  )
  if topology:
    report["device_bytes_limit"], peak = TPU_CHIPS[topology.split(":")[0]]
    if report["step_seconds"] > 0 and report["compiled_flops_per_device"] > 0:
      # XLA's cost analysis counts a loop body once (scanned layers, gradient accumulation),
      # so its time covers one trip; scale it by the FLOPs the loops leave uncounted.
      loops = report["model_flops_per_device"] / report["compiled_flops_per_device"]
      report["loop_scale"] = loops if loops > 1.5 else 1.0
      report["step_seconds"] *= report["loop_scale"]
      report["tokens_per_second"] = tokens / report["step_seconds"]
      report["mfu"] = report["model_flops_per_device"] / (report["step_seconds"] * peak)
  else:
    stats = mesh.devices.flat[0].memory_stats() or {}
    report["device_bytes_limit"] = stats.get("bytes_limit", 0)
  return report


def format_report(report: dict) -> str:
  gib = lambda b: f"{b / 2**30:.3f} GiB"  # noqa: E731
  advice = (
    "shard it further (config.mesh.fsdp, config.mesh.tensor), turn on "
    "config.model.remat, or lower config.train.batch_size"
  )
  head = (
    f"{report['objective']} train step for {report['device']}"
    f"{' (' + report['topology'] + ')' if report['topology'] else ''}, mesh {report['mesh']}, "
    f"{report['parameters']:,} parameters, {report['tokens_per_step']:,} tokens per step"
  )
  if "out_of_memory" in report:
    return (
      f"{head}: the step does NOT fit. XLA: {report['out_of_memory']}\nTo make it fit, {advice}."
    )
  lines = [
    f"{head}: compiled in {report['compile_seconds']:.1f}s",
    "per device:",
    f"  arguments (state + batch) {gib(report['argument_bytes'])}",
    f"  outputs                   {gib(report['output_bytes'])}",
    f"  temporaries               {gib(report['temp_bytes'])}",
    f"  donated (aliased)         -{gib(report['alias_bytes'])}",
    f"  total                     {gib(report['total_bytes'])}",
    f"  FLOPs per step: compiled {report['compiled_flops_per_device']:.3e}, "
    f"model (6N + attention) {report['model_flops_per_device']:.3e}",
    f"  attention {report['attention']}: {report['fused_attention_calls']} fused kernel calls",
  ]
  limit = report["device_bytes_limit"]
  if limit:
    verdict = "fits" if report["total_bytes"] <= limit else f"does NOT fit: {advice}"
    lines.append(f"  device memory {gib(limit)}: the step {verdict}")
  if "mfu" in report:
    loops = report["loop_scale"]
    source = "XLA's cost model" + (f", one loop trip x {loops:.0f}" if loops > 1 else "")
    lines.append(
      f"  estimated step {report['step_seconds'] * 1e3:.1f} ms ({source}): "
      f"{report['tokens_per_second']:,.0f} tokens/s, MFU {100 * report['mfu']:.1f}%"
    )
  elif report.get("topology"):
    lines.append("  estimated step: none (XLA's TPU cost model gave no time for this program)")
  return "\n".join(lines)
