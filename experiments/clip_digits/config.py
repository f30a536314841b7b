"""CLIP (Radford et al. 2021) on captioned images that ship offline: scikit-learn's 8x8
handwritten digits with a templated caption each (the `digit_captions` data set: "a photo of
the digit seven", "7 written by hand", ...; 1,438 train and 359 held-out test images). A ViT
image tower and a causal byte-level text tower trained with the symmetric InfoNCE loss; at
each evaluation the held-out images are classified zero-shot, from text prompts alone.

  python run.py --config=experiments/clip_digits/config.py:cpu --workdir=runs/clip_digits
  python -m jtrans.experiments.check clip_digits runs/clip_digits
Expected (`cpu`): zero-shot test accuracy at least 0.9; experiments/clip_digits/README.md has
the run's curve and wall time. `siglip` is the same with SigLIP's sigmoid loss (Zhai et al.
2023); `ci` the recipe cut short, which CI runs.
"""

import ml_collections

from configs import base

# variant: (steps, eval_every, loss)
VARIANTS = {
  "cpu": (800, 200, "softmax"),
  "siglip": (800, 200, "sigmoid"),
  "ci": (300, 300, "softmax"),
}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"clip_digits: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  steps, eval_every, loss = VARIANTS[variant]
  c = base.get_config()
  c.experiment.name, c.experiment.variant = "clip_digits", variant
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = "clip", 3, 64, 4, 128
  m.image_size, m.patch_size, m.num_channels, m.embed_norm = 8, 2, 1, True
  m.text_num_layers, m.max_len, m.projection_dim = 2, 32, 64
  m.activation, m.norm_epsilon, m.pool = "gelu_exact", 1e-5, "cls"
  if loss == "sigmoid":  # SigLIP's initial temperature and bias.
    m.logit_scale_init, m.logit_bias_init = 2.302585, -10.0
  c.loss.objective, c.loss.contrastive = "contrastive", loss
  d = c.data
  d.name, d.eval_split, d.seq_len = "digit_captions", "test", 32
  d.image_mean, d.image_std = (0.5,), (0.5,)
  d.class_names = "zero,one,two,three,four,five,six,seven,eight,nine"
  d.prompt_templates = "a photo of the digit {}|handwritten {}|the number {}"
  c.train.batch_size, c.train.steps = 64, steps
  c.train.eval_every, c.train.checkpoint_every = eval_every, steps
  c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = 1e-3, 100, 0.05
  c.sample.num_samples = 0
  return c
