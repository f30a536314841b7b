"""The device mesh and the shardings derived from logical axis names (`config.mesh`)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Sizes of (data, fsdp, tensor); one -1 takes the devices the others leave."""
  sizes = [int(cfg[a]) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one of {AXES} may be -1, got {dict(zip(AXES, sizes))}.")
  if -1 in sizes:
    rest = math.prod(s for s in sizes if s != -1)
    if rest <= 0 or num_devices % rest:
      raise ValueError(f"config.mesh: {dict(zip(AXES, sizes))} does not divide the "
                       f"{num_devices} devices; choose axis sizes whose product divides it.")
    sizes[sizes.index(-1)] = num_devices // rest
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh: {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices "
                     f"but {num_devices} are present; make the product of the axis sizes equal "
                     "the device count (use -1 for one axis to take the rest).")
  return tuple(sizes)


def make_mesh(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all), in GSPMD (Auto) mode."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  return jax.make_mesh(shape, AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def rules(cfg: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  """The logical-to-mesh axis rules as tuples (ConfigDict keeps them as tuples)."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in cfg.rules)


def logical_shardings(boxed_tree: Any, mesh: Mesh, axis_rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for a tree whose leaves are boxed with logical names (unboxed: replicated)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, axis_rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data and fsdp axes; the length axis stays whole."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Fails, naming the settings, when the global batch cannot be split over the mesh."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % shards or batch_size % jax.process_count():
    raise ValueError(
        f"config.train.batch_size={batch_size} cannot be split over the mesh's data x fsdp = "
        f"{shards} batch shards ({jax.process_count()} processes); use a multiple of {shards} "
        "or change config.mesh.")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded over the batch axes (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
