"""BERT (Devlin et al. 2019): an encoder trained with masked-LM; post-LN blocks, learned
positions, token-type embeddings, exact GELU, LayerNorm epsilon 1e-12, the MLM head tied to
the embeddings. Masking follows the paper: 15% of tokens, of which 80% become [MASK], 10% a
random token and 10% stay (config.loss.mask_rate, mask_token_id).

| size | layers | d_model | heads | d_ff | parameters (published) |
|---|---:|---:|---:|---:|---:|
| base | 12 | 768 | 12 | 3072 | 110M |
| large | 24 | 1024 | 16 | 4096 | 340M |

  python run.py --config=configs/bert.py:tiny --workdir=runs/bert_tiny   # bytes, about a minute on a CPU
  python run.py --mode=plan --config=configs/bert.py:base
The tiny variant masks with the byte tokenizer's unk id (2) as [MASK]; base and large expect
BERT's WordPiece vocabulary (30522 ids, [MASK] = 103).
Expected for `tiny` (300 steps of 16 x 64 bytes, 2 CPU cores, about 2 minutes): masked-byte
loss 3.06 nats, accuracy 0.21, against the unigram entropy of 3.25. It is still on the plateau
where the learned positions have not yet let attention find a masked byte's neighbours (about
2500 steps at this size; with rotary positions 0.37 after 200 steps): experiments/bert_mlm has
the measurements and the recipe run long enough: 0.53 after 6000 steps (rotary: 0.58 after 1000).
"""

import ml_collections

from configs import base

# name: (num_layers, embed_dim, num_heads)
SIZES = {"tiny": (4, 128, 4), "base": (12, 768, 12), "large": (24, 1024, 16)}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/bert.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads = SIZES[size]
  c = base.get_config()
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = (
    "encoder",
    layers,
    width,
    heads,
    4 * width,
  )
  m.norm_position, m.norm_epsilon, m.activation = "post", 1e-12, "gelu_exact"
  m.embed_norm, m.type_vocab_size, m.output_bias = True, 2, True
  c.loss.objective = "mlm"
  c.sample.num_samples = 0
  if size == "tiny":
    c.data.seq_len, c.train.batch_size, c.train.steps = 64, 16, 300
    c.optim.lr, c.optim.warmup_steps = 1e-3, 50
    c.train.eval_every = c.train.checkpoint_every = 100
  else:
    m.vocab_size, m.max_len, m.dropout_rate = 30522, 512, 0.1
    c.loss.mask_token_id = 103
    c.data.seq_len, c.train.batch_size, c.train.steps = 512, 256, 1_000_000
    c.optim.lr, c.optim.warmup_steps, c.optim.schedule, c.optim.final_lr_ratio = (
      1e-4,
      10_000,
      "linear",
      0.0,
    )
    c.optim.weight_decay = 0.01
    c.train.eval_every = c.train.checkpoint_every = 10_000
  return c
