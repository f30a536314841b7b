"""ViT (Dosovitskiy et al. 2021) on real images that ship offline: scikit-learn's 8x8 handwritten
digits (the `digits` data set: 1,438 train and 359 held-out test images, a fixed stratified
split), cut into 2x2 patches (16 tokens and a class token), pre-LN blocks with exact GELU.

  python run.py --config=experiments/vit_digits/config.py:cpu --workdir=runs/vit_digits
  python -m jtrans.experiments.check vit_digits runs/vit_digits
Expected (`cpu`): test accuracy at least 0.97; experiments/vit_digits/README.md has the run's
curve and wall time. `ci` is the same recipe cut short, which CI runs.
"""

import ml_collections

from configs import base

# variant: (steps, eval_every)
VARIANTS = {"cpu": (3000, 500), "ci": (150, 150)}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"vit_digits: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  steps, eval_every = VARIANTS[variant]
  c = base.get_config()
  c.experiment.name, c.experiment.variant = "vit_digits", variant
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = "vit", 4, 128, 4, 256
  m.image_size, m.patch_size, m.num_channels, m.num_classes = 8, 2, 1, 10
  m.activation, m.norm_epsilon, m.pool, m.dropout_rate = "gelu_exact", 1e-6, "cls", 0.1
  c.loss.objective, c.loss.label_smoothing = "classification", 0.1
  c.data.name, c.data.eval_split = "digits", "test"
  c.data.image_mean, c.data.image_std = (0.5,), (0.5,)
  c.train.batch_size, c.train.steps = 64, steps
  c.train.eval_every, c.train.checkpoint_every = eval_every, steps
  c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = 1e-3, 100, 0.05
  c.sample.num_samples = 0
  return c
