"""The coordinate check (Yang et al. 2022, Tensor Programs V, section 7): train a decoder LM a
few steps at several widths and see how each layer's activations scale with the width.

Under a parametrisation that transfers (muP, CompleteP) every layer's typical coordinate size
stays flat as the width grows; under standard parametrisation with one learning rate the
updates' effect grows with the width, and so do the activations (and logits) after a few steps.

`measure` trains each width on the same batches with the run's own optimizer and train step
(so the learning-rate multipliers under test are the ones training uses) and records mean |x|
of the embeddings, each block's attention and MLP outputs and residual stream, and the logits,
on one fixed batch after each step. `run` does it for standard parametrisation and the
config's, and writes `coord_check.json` and `coord_check.png` (one panel per parametrisation
and recorded step: scale against width, a line per layer).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrans import storage
from jtrans.models import layers

MEASURED = (layers.Embed, layers.Attention, layers.Mlp, layers.Block, layers.Logits)
Scales = dict[str, list[float]]  # Layer name -> mean |x| after each step (index 0: step 1).
SEEDS = 3  # Initialisations averaged per width.


def at_width(config: ml_collections.ConfigDict, width: int, base: int) -> ml_collections.ConfigDict:
  """`config` with embed_dim = `width` (mlp_dim in the same ratio, the head count kept, so the
  head width grows) and muP's base width `base`."""
  config = copy.deepcopy(config)
  m = config.model
  with config.unlocked():
    m.mlp_dim = m.mlp_dim * width // m.embed_dim
    m.embed_dim, m.base_embed_dim = width, base
    m.scan_layers, m.remat = False, "none"  # One module per block, for the per-layer record.
  return config


def layer_scales(model: Any, params: Any, tokens: jax.Array) -> dict[str, jax.Array]:
  """{module path: mean |output|} of the embedding, attention, MLP, block and logits modules."""

  def keep(module, method: str) -> bool:
    return method == "__call__" and isinstance(module, MEASURED)

  _, state = model.apply({"params": params}, tokens, capture_intermediates=keep)
  flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
  scales = {}
  for path, value in flat:
    keys = [getattr(p, "key", None) for p in path]
    name = "/".join(k for k in keys if isinstance(k, str) and k != "__call__")
    scales[name] = jnp.mean(jnp.abs(value.astype(jnp.float32)))
  return scales


def measure(
  config: ml_collections.ConfigDict,
  widths: Sequence[int],
  base: int | None = None,
  seeds: int = SEEDS,
) -> dict[int, Scales]:
  """Trains `config.train.steps` steps at each width (the same batches for all, the run's own
  step and optimizer) from `seeds` initialisations and returns {width: {layer: mean |x| after
  each step, averaged over the seeds}}: one narrow model's trajectory depends on its draw (at
  width 64 a layer's scale varies 2x between seeds). `base`: muP's base width (default:
  config.model.base_embed_dim, else the smallest width)."""
  from jtrans import parts

  if config.model.family != "decoder":
    raise ValueError(
      f"coordinate check: config.model.family={config.model.family!r}; it trains decoder LMs."
    )
  base = base or config.model.base_embed_dim or min(widths)
  steps, batches, results = config.train.steps, None, {}
  for width in widths:
    run = parts.build(at_width(config, width, base))
    if batches is None:  # One draw of the data for every width: only the width changes.
      batches = list(itertools.islice(iter(run.train_data), steps + 1))
    probe = jnp.asarray(batches[-1]["inputs"])
    scales_fn = jax.jit(lambda p, t, model=run.layout.model: layer_scales(model, p, t))
    init = jax.jit(run.layout.init, out_shardings=run.layout.shardings)
    record: Scales = {}
    for seed in range(seeds):
      state = run.engine.place_state(init(jax.random.key(config.seed + seed)))
      with run.engine.context():
        for step, batch in enumerate(batches[:steps]):
          state, _ = run.engine.train_step(state, run.engine.place_batch(batch))
          params = run.engine.global_state(state).params
          for name, value in jax.device_get(scales_fn(params, probe)).items():
            record.setdefault(name, [0.0] * steps)[step] += float(value) / seeds
    results[width] = record
  return results


def growth(results: dict[int, Scales], step: int = -1) -> dict[str, float]:
  """{layer: its scale at the largest width / at the smallest} after `step`."""
  small, large = results[min(results)], results[max(results)]
  return {name: large[name][step] / small[name][step] for name in small}


def plot(path: storage.PathLike, by_parametrization: dict[str, dict[int, Scales]]) -> None:
  """One row per parametrisation, one column per recorded step (first, middle, last)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = list(by_parametrization)
  first = next(iter(by_parametrization.values()))
  steps = len(next(iter(first[min(first)].values())))
  columns = sorted({0, (steps - 1) // 2, steps - 1})
  fig, axes = plt.subplots(
    len(rows), len(columns), figsize=(4 * len(columns), 3.4 * len(rows)), squeeze=False
  )
  for row, name in enumerate(rows):
    results = by_parametrization[name]
    widths = sorted(results)
    for col, step in enumerate(columns):
      ax = axes[row][col]
      for layer in results[widths[0]]:
        ax.plot(widths, [results[w][layer][step] for w in widths], marker="o", label=layer)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_title(f"{name}, after step {step + 1}")
      ax.set_xlabel("width (embed_dim)")
      ax.set_ylabel("mean |activation|")
      ax.grid(True, which="both", alpha=0.3)
  axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format="png", dpi=110)
  plt.close(fig)
  storage.write_bytes(path, image.getvalue())


def run(config: ml_collections.ConfigDict, widths: Sequence[int], workdir: str) -> str:
  """--mode=coord_check: measures standard parametrisation and the config's (muP when it is
  standard too), writes `<workdir>/coord_check.{json,png}` and returns a table of each layer's
  growth from the smallest to the largest width after the last step."""
  names = ["standard", config.model.parametrization]
  if names[1] == "standard":
    names[1] = "mup"
  by_parametrization = {}
  for name in names:
    variant = copy.deepcopy(config)
    variant.model.parametrization = name
    by_parametrization[name] = measure(variant, widths)
  workdir_path = storage.path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  storage.write_text(
    workdir_path / "coord_check.json",
    json.dumps({n: {str(w): s for w, s in r.items()} for n, r in by_parametrization.items()}),
  )
  plot(workdir_path / "coord_check.png", by_parametrization)
  lines = [
    f"coordinate check, widths {list(widths)}, {config.train.steps} steps, {SEEDS} seeds: each "
    f"layer's mean |x| at width {max(widths)} / at width {min(widths)} after the last step",
    f"{'layer':40s} " + " ".join(f"{n:>10s}" for n in names),
  ]
  grown = {n: growth(r) for n, r in by_parametrization.items()}
  for layer in grown[names[0]]:
    lines.append(f"{layer:40s} " + " ".join(f"{grown[n][layer]:10.2f}" for n in names))
  worst = {n: max(max(g.values()), 1 / min(g.values())) for n, g in grown.items()}
  lines.append(
    "largest change: "
    + ", ".join(f"{n} {worst[n]:.2f}x" for n in names)
    + f"; plot: {workdir_path / 'coord_check.png'}"
  )
  return "\n".join(lines)


def flat_enough(results: dict[int, Scales], factor: float = 2.0) -> bool:
  """True when every layer's scale stays within `factor` across the widths at every step."""
  for layer in results[min(results)]:
    for step in range(len(results[min(results)][layer])):
      values = np.array([results[w][layer][step] for w in results])
      if values.max() / values.min() > factor:
        return False
  return True
