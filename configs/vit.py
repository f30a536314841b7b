"""Vision Transformer (Dosovitskiy et al. 2021), Table 1, and DeiT's Ti/S: patch embedding,
class token, learned positions, pre-LN blocks with exact GELU, a linear classification head.

| size | layers | d_model | heads | d_ff | parameters (published) |
|---|---:|---:|---:|---:|---:|
| ti (DeiT-Ti) | 12 | 192 | 3 | 768 | 5.7M |
| s (DeiT-S) | 12 | 384 | 6 | 1536 | 22M |
| b | 12 | 768 | 12 | 3072 | 86M |
| l | 24 | 1024 | 16 | 4096 | 307M |

Published sizes use 224x224 images in 16x16 patches and ImageNet's 1000 classes: TFDS's
imagenet2012 (prepare it once from image-net.org's files as the README's "TFDS data sets" says),
Inception crops with left-right flips for training, the centre 224 of the image resized to 256
for evaluation (on its validation split), ImageNet's mean and std, e.g.
  python run.py --config=configs/vit.py:b --workdir=gs://bucket/vit_b \
      --config.data.data_dir=gs://bucket/tensorflow_datasets
`tiny` (4 layers x 128, 32x32 images in 4x4 patches) learns the 10 classes of the generated
synthetic_images set in about a minute on a CPU:
  python run.py --config=configs/vit.py:tiny --workdir=runs/vit_tiny
Expected: validation accuracy 1.000 (loss 0.0035) from step 200 on (chance: 0.1), about 4 minutes
on 2 CPU cores, most of it preparing the 11,000 images on first use.
"""

import ml_collections

from configs import base

# name: (layers, embed_dim, num_heads)
SIZES = {
  "tiny": (4, 128, 4),
  "ti": (12, 192, 3),
  "s": (12, 384, 6),
  "b": (12, 768, 12),
  "l": (24, 1024, 16),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/vit.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads = SIZES[size]
  c = base.get_config()
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = (
    "vit",
    layers,
    width,
    heads,
    4 * width,
  )
  m.activation, m.norm_epsilon, m.pool = "gelu_exact", 1e-6, "cls"
  c.loss.objective = "classification"
  c.sample.num_samples = 0
  if size == "tiny":
    c.data.name, m.image_size, m.patch_size, m.num_classes = "synthetic_images", 32, 4, 10
    c.train.batch_size, c.train.steps, c.optim.lr, c.optim.warmup_steps = 32, 300, 1e-3, 50
    c.train.eval_every = c.train.checkpoint_every = 100
  else:
    c.data.name, m.image_size, m.patch_size, m.num_classes = "imagenet2012", 224, 16, 1000
    c.data.image_augment, c.data.crop_fraction = "inception_crop_flip", 0.875
    c.data.image_mean, c.data.image_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m.dropout_rate, m.dtype = 0.1, "bfloat16"
    c.train.batch_size, c.train.steps = 4096, 93_000  # 300 epochs of ImageNet-1k.
    c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = 3e-3, 10_000, 0.3
    c.optim.b2, c.optim.grad_clip = 0.999, 1.0
    c.train.eval_every = c.train.checkpoint_every = 5000
  return c
