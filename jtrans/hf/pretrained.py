"""Starting a run from pretrained weights (`config.train.init_from`, a Hugging Face directory).

The imported parameters replace the random initialisation of step 0 and get a fresh optimizer
state; once the run has a checkpoint, resuming restores that instead and reads nothing here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jtrans import finetune as finetuning
from jtrans import parts
from jtrans.hf import common
from jtrans.models import ModelConfig
from jtrans.steps import TrainState

# Settings of how a model runs, not of what it computes: free to differ from the checkpoint's.
RUNTIME_FIELDS = (
  "dtype",
  "param_dtype",
  "attention_impl",
  "attention_block_q",
  "attention_block_kv",
  "scan_layers",
  "remat",
  "dropout_rate",
  "max_len",
)


def check_matches(imported: ModelConfig, ours: ModelConfig, directory: str) -> None:
  """The config describes the imported architecture; else name each differing key."""
  diffs = [
    f"config.model.{f.name}={getattr(ours, f.name)!r} (checkpoint: {getattr(imported, f.name)!r})"
    for f in dataclasses.fields(ModelConfig)
    if f.name not in RUNTIME_FIELDS and getattr(ours, f.name) != getattr(imported, f.name)
  ]
  if imported.positions == "learned" and ours.max_len != imported.max_len:
    diffs.append(
      f"config.model.max_len={ours.max_len} (checkpoint's position table: {imported.max_len})"
    )
  if diffs:
    raise ValueError(
      f"config.train.init_from={directory!r} holds a different model: "
      + "; ".join(diffs)
      + ". Start from configs/hf.py:"
      + directory
      + ", which reads the architecture from the directory."
    )


def stack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """Unrolled `<stack>/block_{i}/...` -> scanned `<stack>/layers/block/...` ([layers, ...]).

  Consumes `params`: each layer's array is dropped once copied into the (aligned) stack, so
  stacking adds about one layer's leaf, not a copy of the model."""
  out = {}
  for name in list(params):
    sub = params.pop(name)
    blocks = (
      sorted((k for k in sub if re.fullmatch(r"block_\d+", k)), key=lambda k: int(k[6:]))
      if isinstance(sub, dict)
      else []
    )
    if not blocks:
      out[name] = sub
      continue
    per_block = [jax.tree.flatten(sub.pop(k)) for k in blocks]
    treedef, columns = per_block[0][1], [leaves for leaves, _ in per_block]
    del per_block
    stacked = []
    for j in range(treedef.num_leaves):
      first = columns[0][j]
      stacked.append(common.aligned_empty((len(columns), *first.shape), first.dtype))
      for b, column in enumerate(columns):
        stacked[-1][b], column[j] = column[j], None
    out[name] = {**sub, "layers": {"block": treedef.unflatten(stacked)}}
  return out


def import_params(directory: str, ours: ModelConfig, abstract_params: Any, shardings: Any) -> Any:
  """The Hugging Face directory's parameters in the run's dtypes and shardings.

  Read in the run's parameter dtype and placed one leaf at a time from aligned host buffers
  (which a CPU device adopts; an accelerator copies them and the host array is dropped), so
  the peak is about one copy of the model."""
  from jtrans import hf  # Imported only when used: it reads safetensors.

  dtypes = {np.dtype(a.dtype) for a in jax.tree.leaves(abstract_params)}
  imported, params = hf.load_pretrained(directory, dtypes.pop() if len(dtypes) == 1 else np.float32)
  check_matches(imported, ours, directory)
  if ours.scan_layers:
    params = stack_layers(params)
  leaves, treedef = jax.tree.flatten(params)
  del params
  for i, (abstract, sharding) in enumerate(
    zip(treedef.flatten_up_to(abstract_params), treedef.flatten_up_to(shardings))
  ):
    leaves[i] = jax.device_put(common.aligned(np.asarray(leaves[i], abstract.dtype)), sharding)
  return treedef.unflatten(leaves)


def initial_state(
  config: ml_collections.ConfigDict,
  ours: ModelConfig,
  init_opt_state: Callable,
  abstract: TrainState,
  shardings: TrainState,
) -> TrainState:
  """Step 0 with the imported parameters, placed with the run's shardings and dtypes."""
  adapters = finetuning.ADAPTER_KEYS  # Made fresh on top of the imported weights.
  base = {k: v for k, v in abstract.params.items() if k not in adapters}
  base_shardings = {k: v for k, v in shardings.params.items() if k not in adapters}
  params = import_params(config.train.init_from, ours, base, base_shardings)
  tuning = finetuning.Settings.from_config(config)

  def state(p):  # Fine-tuning's adapters and frozen dtype on top of the imported weights.
    p = parts.finetune_params(p, tuning, jax.random.key(config.seed))
    return TrainState(step=np.zeros((), np.int32), params=p, opt_state=init_opt_state(p))

  return jax.jit(state, out_shardings=shardings, donate_argnums=0)(params)
