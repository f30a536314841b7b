"""Decoder-only byte-level language model on the embedded corpus (the default experiment).

Run (the default, `tiny`: 1000 steps of 16 x 64 bytes, about 2 minutes on 2 CPU cores):
  python run.py --config=configs/lm.py:tiny --workdir=runs/lm_tiny
Expected: validation loss 1.45 nats per byte at step 1000 (1.86 at step 500), against the
validation split's byte-unigram entropy of 3.25 nats; samples with English words and Python
punctuation. (nanoGPT's CPU recipe reaches 1.38 on this text in 2000 steps; 1500 steps of this
recipe reach 1.34.)

Larger sizes, for accelerators (same recipe, width and depth from the table below):
  python run.py --config=configs/lm.py:small --workdir=runs/lm_small
  python run.py --config=configs/lm.py:medium --workdir=runs/lm_medium
  python run.py --config=configs/lm.py:large --workdir=runs/lm_large
"""

import ml_collections

from configs import base

# name: (num_layers, embed_dim, num_heads, seq_len, batch_size, steps, lr)
SIZES = {
  "tiny": (4, 128, 4, 64, 16, 1000, 3e-3),
  "small": (6, 384, 6, 256, 64, 5000, 1e-3),
  "medium": (12, 768, 12, 512, 128, 20000, 6e-4),
  "large": (24, 1024, 16, 1024, 256, 50000, 3e-4),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/lm.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads, seq_len, batch, steps, lr = SIZES[size]
  c = base.get_config()
  c.model.num_layers, c.model.embed_dim, c.model.num_heads = layers, width, heads
  c.model.mlp_dim = 4 * width
  c.model.max_len = seq_len
  c.data.seq_len = seq_len
  c.train.batch_size, c.train.steps = batch, steps
  c.train.eval_every = c.train.checkpoint_every = steps // 2
  c.optim.lr = lr
  c.optim.warmup_steps = steps // 20
  c.sample.length = min(120, seq_len - 8)  # Prompt + samples fit the learned position table.
  if size != "tiny":
    c.model.dtype = "bfloat16"
  return c
