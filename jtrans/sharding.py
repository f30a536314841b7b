"""The device mesh and the shardings derived from logical axis names (`config.mesh`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
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
      raise ValueError(
        f"config.mesh: {dict(zip(AXES, sizes))} does not divide the "
        f"{num_devices} devices; choose axis sizes whose product divides it."
      )
    sizes[sizes.index(-1)] = num_devices // rest
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"config.mesh: {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices "
      f"but {num_devices} are present; make the product of the axis sizes equal "
      "the device count (use -1 for one axis to take the rest)."
    )
  return tuple(sizes)


def dcn_shape(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Slices along (data, fsdp, tensor) over the data-centre network (multi-slice TPU)."""
  return tuple(int(cfg[f"dcn_{a}"]) for a in AXES)


def make_mesh(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all), in GSPMD (Auto) mode.

  `cfg.data/fsdp/tensor` are sizes within a slice (fast ICI links); `cfg.dcn_*` multiply
  them across slices, so that only the axes named there cross the slower network. Off TPU
  a process counts as a slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  dcn = dcn_shape(cfg)
  axis_types = (jax.sharding.AxisType.Auto,) * len(AXES)
  if math.prod(dcn) == 1:
    return jax.make_mesh(
      mesh_shape(cfg, len(devices)), AXES, devices=devices, axis_types=axis_types
    )
  if len(devices) % math.prod(dcn):
    raise ValueError(
      f"config.mesh.dcn_*: {dict(zip(AXES, dcn))} slices do not divide the {len(devices)} devices."
    )
  ici = mesh_shape(cfg, len(devices) // math.prod(dcn))
  grid = mesh_utils.create_hybrid_device_mesh(
    ici, dcn, devices, process_is_granule=devices[0].platform != "tpu"
  )
  return Mesh(grid, AXES, axis_types=axis_types)


def rules(cfg: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  """The logical-to-mesh axis rules as tuples (ConfigDict keeps them as tuples)."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in cfg.rules)


def _fit(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
  """Drops mesh axes from dimensions they do not divide (e.g. a vocabulary of 259 rows)."""
  spec = []
  for dim, axes in zip(shape, tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for name in names:
      if dim % (math.prod(sharding.mesh.shape[n] for n in kept) * sharding.mesh.shape[name]) == 0:
        kept.append(name)
    spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def logical_shardings(boxed_tree: Any, mesh: Mesh, axis_rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for a tree whose leaves are boxed with logical names (unboxed: replicated).

  A dimension that a rule's mesh axes do not divide stays whole on that axis, so any model
  fits any mesh; the sharding test checks that the big tensors are the ones split.
  """
  specs = nn.get_partition_spec(boxed_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, axis_rules)
  shapes = nn.meta.unbox(boxed_tree)
  return jax.tree.map(lambda s, x: _fit(s, x.shape), shardings, shapes)


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
      "or change config.mesh."
    )


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The global batch (every process holds it whole, on the host) -> global arrays sharded
  over the batch axes; each process copies only the rows of its own devices."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
    for k, v in batch.items()
  }
