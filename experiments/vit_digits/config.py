"""ViT (Dosovitskiy et al. 2021) on real images that ship offline: scikit-learn's 8x8 handwritten
digits (the `digits` data set: 1,438 train and 359 held-out test images, a fixed stratified
split), cut into 2x2 patches (16 tokens and a class token), pre-LN blocks with exact GELU.

  python run.py --config=experiments/vit_digits/config.py:cpu --workdir=runs/vit_digits
  python -m jtrans.experiments.check vit_digits runs/vit_digits
Expected (`cpu`): test accuracy at least 0.97; experiments/vit_digits/README.md has the run's
curve and wall time. `ci` is the same recipe cut short, which CI runs.

`i1k_s16` is big_vision's ViT-S/16 on ImageNet-1k for 90 epochs (Beyer et al. 2022, "Better
plain ViT baselines"; big_vision/configs/vit_s16_i1k.py: 76.5% top-1 on the validation split):
batch 1024, train[:99%] (1,268,355 images) for 111,476 steps, Inception crops of 5-100% of the
area, flips, RandAugment(2, 10), Mixup 0.2, pixels to [-1, 1]; sin-cos 2-D positions, global
average pooling, a tanh pre-logits layer, a zero-initialised head, no dropout; Adam (0.9, 0.999),
lr 1e-3 with 10k warm-up steps and cosine decay to 0, weight decay 1e-4 on the kernels
(big_vision's decay is added before the schedule scales the update: AdamW's lr x wd), clipping
at 1. Evaluation: the validation split's 50,000 images, resized to 256, centre 224.
  python run.py --config=experiments/vit_digits/config.py:i1k_s16 --workdir=gs://BUCKET/vit_s16 \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
Expected (`i1k_s16`): validation accuracy at least 0.755 at step 111,476 (76.5% less one point).
"""

import ml_collections

from configs import base, vit

# variant: (steps, eval_every)
VARIANTS = {"cpu": (3000, 500), "ci": (150, 150), "i1k_s16": None}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"vit_digits: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  if variant == "i1k_s16":
    return _i1k_s16()
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


def _i1k_s16() -> ml_collections.ConfigDict:
  c = vit.get_config("s")
  c.experiment.name, c.experiment.variant = "vit_digits", "i1k_s16"
  m, d, o, t = c.model, c.data, c.optim, c.train
  m.positions, m.pool, m.pre_logits, m.head_zero_init, m.dropout_rate = (
    "sincos2d",
    "mean",
    True,
    True,
    0.0,
  )
  d.train_split, d.eval_split = "train[:99%]", "validation"
  d.image_augment, d.crop_area_min, d.crop_fraction = "inception_crop_flip", 0.05, 0.875
  d.randaugment_layers, d.randaugment_magnitude, d.mixup = 2, 10, 0.2
  d.image_mean, d.image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
  t.batch_size, t.steps = 1024, 90 * 1_268_355 // 1024
  t.eval_every, t.checkpoint_every, t.eval_batches = 2500, 5000, 0
  o.lr, o.warmup_steps, o.schedule, o.final_lr_ratio = 1e-3, 10_000, "cosine", 0.0
  o.b1, o.b2, o.weight_decay, o.grad_clip = 0.9, 0.999, 1e-4, 1.0
  return c
