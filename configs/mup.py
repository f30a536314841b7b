"""muP and CompleteP (jtrans/parametrization.py): the coordinate check, and the base of the
learning-rate transfer sweeps.

A byte-level decoder of 2 pre-LN blocks with 4 heads (the head width grows with the model's),
learned positions, GELU and tied embeddings, on rows of 64 bytes of the embedded corpus. Every
hyperparameter is tuned once at the base width (`model.base_embed_dim`) and depth
(`model.base_num_layers`); muP and CompleteP then carry them to other widths and depths.

Run:
  python run.py --mode=coord_check --config=configs/mup.py:coord_check --workdir=runs/coord_check
  python run.py --config=configs/mup.py:transfer --workdir=runs/mup_128   # one point of the sweep
  python run.py --sweep=configs/sweeps/cpu_mup_transfer.py --workdir=runs/mup_transfer
  python run.py --mode=analyze --workdir=runs/mup_transfer
Expected: see COORD_CHECK and configs/sweeps/cpu_mup_transfer.py (measured on 2 CPU cores).
"""

import ml_collections

from configs import base

# Measured 2026-12-08, `--mode=coord_check --config=configs/mup.py:coord_check` (widths 64 to
# 1024, 10 steps at lr 1e-2): filled in by the session that ran it; see the README.
COORD_CHECK = None
VARIANTS = ("coord_check", "transfer", "completep")


def get_config(variant: str = "transfer") -> ml_collections.ConfigDict:
  """coord_check: 10 steps at a constant lr of 1e-2 from base width 64 (the check trains it at
  each --widths). transfer: 200 steps of 8 x 64 bytes at width 128 = the base, cosine lr with 20
  warm-up steps; the sweep varies the width, lr and parametrization. completep: the same at
  depth 2 = the base depth, under CompleteP; its sweep varies the depth and lr."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/mup.py: variant {variant!r} is not one of {VARIANTS}.")
  c = base.get_config()
  m = c.model
  m.num_layers, m.num_heads, m.embed_dim, m.mlp_dim = 2, 4, 128, 512
  m.max_len = c.data.seq_len = 64
  m.parametrization, m.base_embed_dim = "mup", 128
  c.sample.num_samples = 0
  c.train.async_checkpoints = False
  if variant == "coord_check":
    m.embed_dim, m.mlp_dim, m.base_embed_dim = 64, 256, 64
    c.train.batch_size, c.train.steps = 16, 10
    c.optim.schedule, c.optim.warmup_steps, c.optim.lr = "constant", 0, 1e-2
    return c
  c.train.batch_size, c.train.steps = 8, 200
  c.train.eval_every = c.train.checkpoint_every = c.train.steps
  c.train.log_every = 50
  c.optim.lr, c.optim.warmup_steps = 2**-7, 20
  if variant == "completep":
    m.parametrization, m.base_num_layers = "completep", 2
  return c
