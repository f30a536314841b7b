"""A class-conditional diffusion Transformer (Peebles & Xie 2023, DiT) on images that ship
offline: scikit-learn's 8x8 handwritten digits (the `digits` data set, 1,438 train and 359
test images), 2x2 patches, adaLN-Zero blocks, the epsilon loss on a cosine schedule of 1,000
steps with 10% of labels dropped, then DDIM sampling with classifier-free guidance.

  python run.py --config=experiments/vit_digits/config.py:cpu --workdir=runs/vit_digits
  python run.py --config=experiments/dit_digits/config.py:cpu --workdir=runs/dit_digits \\
      --config.sample.classifier=runs/vit_digits
  python -m jtrans.experiments.check dit_digits runs/dit_digits
Expected (`cpu`): the ViT digit classifier (experiments/vit_digits) labels at least 80% of the
guided samples as the class they were drawn for; <workdir>/samples.png is the grid (a row per
digit), and experiments/dit_digits/README.md shows it. `ci` is the recipe cut short.
"""

import ml_collections

from configs import base

# variant: (steps, eval_every, layers, width, lr)
VARIANTS = {"cpu": (3000, 500, 4, 128, 1e-3), "ci": (1000, 1000, 2, 64, 4e-3)}
# Runs that must exist before this one, by setting: their recipe's same variant trains them
# (tests/experiments_test.py does so for `ci`).
PREREQUISITES = {"sample.classifier": "vit_digits"}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"dit_digits: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  steps, eval_every, layers, width, lr = VARIANTS[variant]
  c = base.get_config()
  c.experiment.name, c.experiment.variant = "dit_digits", variant
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = "dit", layers, width, 4, 4 * width
  m.image_size, m.patch_size, m.num_channels, m.num_classes = 8, 2, 1, 10
  m.positions, m.activation, m.norm_epsilon = "sincos2d", "gelu", 1e-6
  c.loss.objective, c.loss.noise_schedule, c.loss.diffusion_steps = "diffusion", "cosine", 1000
  c.loss.class_dropout = 0.1
  c.data.name, c.data.eval_split = "digits", "test"
  c.data.image_mean, c.data.image_std = (0.5,), (0.5,)
  c.train.batch_size, c.train.steps = 64, steps
  c.train.eval_every, c.train.checkpoint_every = eval_every, steps
  c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = lr, 200, 0.0
  s = c.sample
  s.num_samples, s.sampler, s.diffusion_steps, s.guidance = 10, "ddim", 50, 3.0
  return c
