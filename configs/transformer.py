"""The original Transformer (Vaswani et al. 2017, "Attention Is All You Need"), Table 3:
encoder-decoder, post-LN, sinusoidal positions, ReLU, source/target/output embeddings shared
and scaled by sqrt(d_model), label smoothing 0.1, Adam(0.9, 0.98, 1e-9) with the rsqrt
schedule after 4000 warm-up steps.

| size | layers (enc + dec) | d_model | heads | d_ff | dropout | parameters (published) |
|---|---:|---:|---:|---:|---:|---:|
| base | 6 + 6 | 512 | 8 | 2048 | 0.1 | 65M |
| big | 6 + 6 | 1024 | 16 | 4096 | 0.3 | 213M |

  python run.py --config=configs/transformer.py:tiny --workdir=runs/transformer_tiny
`tiny` (2 + 2 layers x 128) learns to reverse strings of bytes (the reverse_strings task).
Expected for `tiny` (1000 steps of 32 pairs, 2 CPU cores, under 3 minutes): validation loss
3.40 nats/byte at step 250 (the letter-frequency plateau, still in warm-up), then 2.43, 1.85
and 1.32 at step 1000, token accuracy 0.50.

base and big translate English to German on TFDS's wmt14_translate/de-en (train: WMT14's 4.5M
pairs; evaluated on validation, newstest2013, the paper's development set; prepare it once as
the README's "TFDS data sets" says) with one SentencePiece vocabulary of 37000 pieces shared by
both languages (the paper's ~37000 BPE tokens), trained on both sides of the train split and
cached beside the data on first use:
  python run.py --config=configs/transformer.py:base --workdir=gs://bucket/transformer_base \
      --config.data.data_dir=gs://bucket/tensorflow_datasets
"""

import ml_collections

from configs import base

# name: (layers, embed_dim, num_heads, mlp_dim, dropout)
SIZES = {
  "tiny": (2, 128, 4, 512, 0.0),
  "base": (6, 512, 8, 2048, 0.1),
  "big": (6, 1024, 16, 4096, 0.3),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/transformer.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads, mlp, dropout = SIZES[size]
  c = base.get_config()
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = (
    "encoder_decoder",
    layers,
    width,
    heads,
    mlp,
  )
  m.dropout_rate, m.positions, m.norm_position, m.activation = dropout, "sinusoidal", "post", "relu"
  m.scale_embeddings, m.tie_embeddings = True, True
  c.loss.objective, c.loss.label_smoothing = "seq2seq", 0.1
  c.optim.b1, c.optim.b2, c.optim.eps, c.optim.weight_decay = 0.9, 0.98, 1e-9, 0.0
  c.optim.schedule, c.optim.warmup_steps = "rsqrt", 4000
  c.optim.lr = width**-0.5 * 4000**-0.5  # The paper's peak: d^-0.5 * warmup^-0.5.
  c.sample.num_samples = 0
  if size == "tiny":
    c.data.name, c.data.seq_len = "reverse_strings", 40  # Up to 32 letters + EOS.
    # Post-LN needs its long warm-up even this small (Xiong et al. 2020): with 50 warm-up steps
    # and lr 2e-3 it stays on the letter-frequency plateau (3.3 nats) for good.
    c.train.batch_size, c.train.steps, c.optim.warmup_steps, c.optim.lr = 32, 1000, 400, 7e-4
    c.train.eval_every = c.train.checkpoint_every = 250
  else:
    m.vocab_size, m.max_len = 37000, 256
    c.data.name, c.data.source_key, c.data.target_key = "wmt14_translate/de-en", "en", "de"
    c.data.tokenizer, c.data.tokenizer_vocab_size, c.data.seq_len = "sentencepiece", 37000, 256
    c.train.batch_size, c.train.steps = 256, 100_000  # ~25k source + 25k target tokens a batch.
    c.train.eval_every = c.train.checkpoint_every = 5000
  return c
