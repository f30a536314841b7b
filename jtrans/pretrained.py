"""Starting a run from pretrained weights (`config.train.init_from`, a Hugging Face directory).

The imported parameters replace the random initialisation of step 0 and get a fresh optimizer
state; once the run has a checkpoint, resuming restores that instead and reads nothing here.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from jtrans.models import ModelConfig
from jtrans.steps import TrainState

# Settings of how a model runs, not of what it computes: free to differ from the checkpoint's.
RUNTIME_FIELDS = ("dtype", "param_dtype", "attention_impl", "scan_layers", "remat",
                  "dropout_rate", "max_len")


def check_matches(imported: ModelConfig, ours: ModelConfig, directory: str) -> None:
  """The config describes the imported architecture; else name each differing key."""
  diffs = [f"config.model.{f.name}={getattr(ours, f.name)!r} (checkpoint: "
           f"{getattr(imported, f.name)!r})" for f in dataclasses.fields(ModelConfig)
           if f.name not in RUNTIME_FIELDS and getattr(ours, f.name) != getattr(imported, f.name)]
  if imported.positions == "learned" and ours.max_len != imported.max_len:
    diffs.append(f"config.model.max_len={ours.max_len} (checkpoint's position table: "
                 f"{imported.max_len})")
  if diffs:
    raise ValueError(f"config.train.init_from={directory!r} holds a different model: "
                     + "; ".join(diffs) + ". Start from configs/hf.py:" + directory
                     + ", which reads the architecture from the directory.")


def stack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """Unrolled `<stack>/block_{i}/...` -> scanned `<stack>/layers/block/...` ([layers, ...])."""
  out = {}
  for name, sub in params.items():
    blocks = sorted((k for k in sub if re.fullmatch(r"block_\d+", k)), key=lambda k: int(k[6:])) \
        if isinstance(sub, dict) else []
    if not blocks:
      out[name] = sub
      continue
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *[sub[k] for k in blocks])
    out[name] = {**{k: v for k, v in sub.items() if k not in blocks}, "layers": {"block": stacked}}
  return out


def initial_state(config: ml_collections.ConfigDict, ours: ModelConfig, init_opt_state: Callable,
                  abstract: TrainState, shardings: TrainState) -> TrainState:
  """Step 0 with the imported parameters, placed with the run's shardings and dtypes."""
  from jtrans import hf  # Imported only when used: it reads safetensors.
  directory = config.train.init_from
  imported, params = hf.load_pretrained(directory)
  check_matches(imported, ours, directory)
  if ours.scan_layers:
    params = stack_layers(params)
  params = jax.tree.map(lambda x, a: np.asarray(x, a.dtype), params, abstract.params)
  params = jax.device_put(params, shardings.params)
  return jax.jit(lambda p: TrainState(step=np.zeros((), np.int32), params=p,
                                      opt_state=init_opt_state(p)), out_shardings=shardings)(params)
