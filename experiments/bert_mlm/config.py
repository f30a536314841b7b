"""BERT's masked-LM pre-training (Devlin et al. 2019: 15% of tokens chosen, 80% [MASK], 10%
random, 10% kept; post-LN blocks, embedding LayerNorm, token types, exact GELU, the MLM head's
transform and tied decoder with a bias) at `configs/bert.py:tiny` size (4 layers x 128, 4 heads),
on the embedded corpus (CPython's pydoc topics) in bytes, scored by masked-byte accuracy on the
validation split.

  python run.py --config=experiments/bert_mlm/config.py:cpu --workdir=runs/bert_mlm
  python -m jtrans.experiments.check bert_mlm runs/bert_mlm
Expected (`cpu`): masked-byte accuracy at least 0.45 after 6000 steps (the unigram rate is
0.21). BERT's learned absolute positions keep this model on the unigram plateau for its first
~2500 steps (README: why); `rotary` swaps in rotary position embeddings (RoFormer; ModernBERT's
choice), with which it passes 0.45 before step 500. `ci` is `rotary` cut to 150 steps: `cpu`
cut that short would still be on the plateau, and a check there could not tell learning from
not.
"""

import ml_collections

from configs import bert

# variant: (positions, steps, eval_every)
VARIANTS = {
  "cpu": ("learned", 6000, 500),
  "rotary": ("rotary", 1000, 250),
  "ci": ("rotary", 150, 150),
}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"bert_mlm: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  positions, steps, eval_every = VARIANTS[variant]
  c = bert.get_config("tiny")
  c.experiment.name, c.experiment.variant = "bert_mlm", variant
  c.model.positions = positions
  c.model.position_init_std = 0.02  # BERT's (used by the learned table only).
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = steps, eval_every, steps
  c.optim.warmup_steps = 100 if steps > 300 else 50
  return c
