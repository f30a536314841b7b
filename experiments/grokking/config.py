"""Grokking (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability"): a one-layer Transformer learns a + b mod 113 from 30% of the pairs,
full-batch, memorises them early and generalises to the held-out 70% thousands of steps later.

The paper's model and recipe: one block of width 128, 4 heads of 32, a ReLU MLP of 512, no
LayerNorm, untied embeddings, learned positions, no biases (the paper freezes them at zero),
every weight normal(0.8 / sqrt(128)); AdamW lr 1e-3 (10 warm-up steps, then constant),
weight decay 1 on every weight, betas (0.9, 0.98), no clipping; each step's batch is the whole
training set (3,831 equations). Tokens are words ("12", "+", "85", "="; the paper drops the
"+"), and the loss is on the answer alone (data.sampling="prompt_response" without EOS), so
`accuracy` is the fraction of equations answered right. The paper's output layer has the 113
answers alone; here loss.output_words makes them the only classes (the other rows of the
vocabulary get no gradient). With every word a class (117, or the 128 rows) the same run is
still at chance at step 14,000: experiments/grokking/README.md has the PyTorch reference runs.

  python run.py --config=experiments/grokking/config.py:cpu --workdir=runs/grokking
  python -m jtrans.experiments.check grokking runs/grokking
  python -m jtrans.experiments.curves runs/grokking --metrics=loss,accuracy --log_steps \\
      --out=experiments/grokking/curves.png
Expected (`cpu`): train accuracy 1.0 by step 1000, test accuracy at least 0.99 at step 17,000.
The paper's cleanup phase ends near 13k; here seed 0 (the recipe's) passes 0.99 at ~16,200 and
seed 1 at ~11,000, and the paper's own setup re-run in PyTorch
(experiments/grokking/reference_torch.py) between 14,000 and 14,500;
experiments/grokking/README.md has the curves and wall time. `power_div97` is Power et al.
2022's x / y mod 97 from 50% of the pairs (longer); `ci` is the cpu recipe cut to its
memorisation phase.
"""

import ml_collections

from configs import base

# variant: (data set config, train pairs, steps, eval_every)
VARIANTS = {
  "cpu": ("add113_30", 3831, 17000, 500),
  "power_div97": ("div97", 4656, 30000, 1000),
  "ci": ("add113_30", 3831, 200, 200),
}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"grokking: variant {variant!r} is not one of {sorted(VARIANTS)}.")
  task, pairs, steps, eval_every = VARIANTS[variant]
  c = base.get_config()
  c.experiment.name, c.experiment.variant = "grokking", variant
  m = c.model
  m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 1, 128, 4, 512
  m.activation, m.norm, m.use_bias, m.tie_embeddings = "relu", "none", False, False
  m.init_std = m.position_init_std = 0.8 / 128**0.5
  m.scale_residual_init = False
  # Rows "a b =" -> c (Nanda et al.'s format), or "a / b =" -> c; the vocabulary: 3 specials,
  # the p numbers, "=" (and "/").
  seq_len = 3 if task == "add113_30" else 4
  m.max_len, m.vocab_size = seq_len, 128
  d = c.data
  d.name, d.tokenizer, d.tokenizer_vocab_size = f"modular_arithmetic/{task}", "word", 128
  d.sampling, d.response_eos, d.seq_len = "prompt_response", False, seq_len
  c.train.batch_size = pairs  # Full batch: every training equation in every step.
  c.train.steps, c.train.eval_every, c.train.log_every = steps, eval_every, 100
  c.train.checkpoint_every = steps
  o = c.optim
  o.lr, o.schedule, o.warmup_steps, o.b1, o.b2 = 1e-3, "constant", 10, 0.9, 0.98
  o.weight_decay, o.decay_embeddings, o.grad_clip = 1.0, True, 0.0
  # Nanda et al.'s output layer has the p answers alone; with all 117 words (or 128 rows) as
  # classes, grokking comes thousands of steps later (README: the PyTorch reference runs).
  modulus = 113 if task == "add113_30" else 97
  c.loss.output_words = " ".join(str(i) for i in range(modulus))
  c.sample.num_samples = 0
  return c
