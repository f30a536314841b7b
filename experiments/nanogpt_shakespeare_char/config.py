"""nanoGPT's shakespeare_char recipes (Karpathy, github.com/karpathy/nanoGPT): a character-level
GPT on Tiny Shakespeare, with nanoGPT's own choices: no biases (in LayerNorm too), exact GELU,
N(0, 0.02) init with the residual projections at 0.02 / sqrt(2 x layers), tied embeddings,
weight decay 0.1 on every matrix (the embeddings too), AdamW(0.9, 0.99), clip 1, warm-up 100
then cosine to lr / 10.

  python run.py --config=experiments/nanogpt_shakespeare_char/config.py:cpu --workdir=runs/shakespeare
  python -m jtrans.experiments.check nanogpt_shakespeare_char runs/shakespeare
Expected (`cpu`, nanoGPT's README CPU command: 4 layers, 4 heads, 128 wide, context 64, batch
12, 2000 iterations, lr 1e-3, no dropout): validation loss at most 1.89 nats/char (nanoGPT:
1.88); experiments/nanogpt_shakespeare_char/README.md has the run's table and wall time.

`gpu` is the "baby GPT" of config/train_shakespeare_char.py (6 x 384, 6 heads, context 256,
batch 64, dropout 0.2, 5000 iterations; nanoGPT: 1.4697 after 3 minutes on an A100).
`gpt2_owt` is nanoGPT's GPT-2 (124M) reproduction (config/train_gpt2.py: 12 x 768, context
1024, 480 rows a step (12 x 40 accumulated), 600k iterations, lr 6e-4 cosine to 6e-5 after 2000
warm-up, AdamW(0.9, 0.95), weight decay 0.1, clip 1, no biases, no dropout; validation loss
~2.85 after ~4 days on 8 A100s) on OpenWebText as your own jsonl files, GPT-2's tokenizer:
  python run.py --config=experiments/nanogpt_shakespeare_char/config.py:gpt2_owt \
      --workdir=gs://BUCKET/gpt2_owt --config.data.train_files='gs://BUCKET/owt/train-*.jsonl' \
      --config.data.eval_files='gs://BUCKET/owt/val-*.jsonl' --config.data.tokenizer_path=DIR
`ci` is
`cpu` cut to 150 steps, which CI runs. Tiny Shakespeare's input.txt is read from
../shared/data/tinyshakespeare beside the repository (override with
--config.data.manual_dir=DIR); the split is TFDS's tiny_shakespeare (train: the first 90% of the
characters, as nanoGPT's; validation: the next 5%, all of it evaluated).
"""

import os

import ml_collections

from configs import base, gpt2

HERE = os.path.dirname(os.path.abspath(__file__))
SHAKESPEARE = os.path.normpath(
  os.path.join(HERE, "..", "..", "..", "shared", "data", "tinyshakespeare")
)

# variant: (layers, width, heads, context, batch, steps, dropout, eval_every)
VARIANTS = {
  "cpu": (4, 128, 4, 64, 12, 2000, 0.0, 250),
  "ci": (4, 128, 4, 64, 12, 150, 0.0, 150),
  "gpu": (6, 384, 6, 256, 64, 5000, 0.2, 250),
  "gpt2_owt": None,  # configs/gpt2.py:small with nanoGPT's train_gpt2.py (below).
}


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant == "gpt2_owt":
    return _gpt2_owt()
  if variant not in VARIANTS:
    raise ValueError(
      f"nanogpt_shakespeare_char: variant {variant!r} is not one of {sorted(VARIANTS)}."
    )
  layers, width, heads, context, batch, steps, dropout, eval_every = VARIANTS[variant]
  c = base.get_config()
  c.experiment.name, c.experiment.variant = "nanogpt_shakespeare_char", variant
  m = c.model
  m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = layers, width, heads, 4 * width
  m.max_len = c.data.seq_len = context
  m.dropout_rate, m.use_bias, m.activation = dropout, False, "gelu_exact"
  c.data.name, c.data.manual_dir = "tiny_shakespeare_file", SHAKESPEARE
  c.data.sampling = "windows"  # nanoGPT's get_batch: i.i.d. windows of the one long text.
  c.train.batch_size, c.train.steps = batch, steps
  c.train.eval_every, c.train.checkpoint_every = eval_every, steps
  c.train.eval_batches = 0  # The whole validation split: a number that does not move with the draw.
  o = c.optim
  o.lr, o.schedule, o.warmup_steps, o.final_lr_ratio = 1e-3, "cosine", 100, 0.1
  o.b1, o.b2, o.weight_decay, o.decay_embeddings, o.grad_clip = 0.9, 0.99, 0.1, True, 1.0
  c.sample.prompt, c.sample.num_samples, c.sample.length = "ROMEO:", 1, context - 8
  return c


def _gpt2_owt() -> ml_collections.ConfigDict:
  """nanoGPT's config/train_gpt2.py on configs/gpt2.py:small (GPT-2 124M)."""
  c = gpt2.get_config("small")
  c.experiment.name, c.experiment.variant = "nanogpt_shakespeare_char", "gpt2_owt"
  c.model.use_bias, c.model.vocab_size = False, 50304  # nanoGPT pads 50257 to a multiple of 64.
  d = c.data
  d.name, d.file_format, d.tokenizer = "files", "jsonl", "gpt2_bpe"  # Files and dir: flags.
  c.train.batch_size, c.train.steps = 480, 600_000  # 12 rows x 40 accumulation steps x 1024.
  c.train.eval_every = c.train.checkpoint_every = 2000
  c.train.eval_batches = 5  # nanoGPT: 200 batches of 12 rows, 2,400 rows.
  o = c.optim
  o.lr, o.schedule, o.warmup_steps, o.final_lr_ratio = 6e-4, "cosine", 2000, 0.1
  o.b1, o.b2, o.weight_decay, o.decay_embeddings, o.grad_clip = 0.9, 0.95, 0.1, True, 1.0
  return c
