"""T5 v1.1 (Raffel et al. 2020; the v1.1 checkpoints): encoder-decoder with pre-RMSNorm, no
biases, bucketed relative position bias (32 buckets up to distance 128, shared by a stack's
layers), gated GELU, untied output matrix, attention heads of width d_kv = 64.

| size | layers (enc + dec) | d_model | heads | d_ff | parameters (published) |
|---|---:|---:|---:|---:|---:|
| small | 8 + 8 | 512 | 6 | 1024 | 77M |
| base | 12 + 12 | 768 | 12 | 2048 | 248M |
| large | 24 + 24 | 1024 | 16 | 2816 | 783M |
| xl | 24 + 24 | 2048 | 32 | 5120 | 2.85B |

  python run.py --config=configs/t5.py:tiny --workdir=runs/t5_tiny   # reverses byte strings, ~1 min on a CPU
  python run.py --mode=plan --config=configs/t5.py:base
The paper pre-trains with Adafactor; jtrans uses AdamW. The original T5 (v1.0: ReLU, tied
embeddings) is the same module with config.model.gated_mlp=False, activation="relu",
tie_embeddings=True and logits_scale=d_model^-0.5; configs/hf.py imports either from Hugging Face.
Expected for `tiny` (300 steps of 32 pairs, 2 CPU cores, about 3 minutes): validation loss 2.06
nats/byte, token accuracy 0.32 (uniform over the 26 letters and EOS: 3.30).

small to xl train English to German on TFDS's wmt14_translate/de-en (the paper's WMT task,
here from scratch; configs/t5_c4.py pre-trains the same sizes on C4 with span corruption) with a 32000-piece
SentencePiece vocabulary trained on both sides (the model's 32128 rows, as T5's); prepare the
data set once as the README's "TFDS data sets" says:
  python run.py --config=configs/t5.py:base --workdir=gs://bucket/t5_base \
      --config.data.data_dir=gs://bucket/tensorflow_datasets
"""

import ml_collections

from configs import base

# name: (layers, embed_dim, num_heads, mlp_dim)
SIZES = {
  "tiny": (2, 128, 4, 256),
  "small": (8, 512, 6, 1024),
  "base": (12, 768, 12, 2048),
  "large": (24, 1024, 16, 2816),
  "xl": (24, 2048, 32, 5120),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/t5.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads, mlp = SIZES[size]
  c = base.get_config()
  m = c.model
  m.family, m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = (
    "encoder_decoder",
    layers,
    width,
    heads,
    mlp,
  )
  m.positions, m.norm, m.norm_epsilon, m.use_bias = "relative", "rmsnorm", 1e-6, False
  m.activation, m.gated_mlp, m.tie_embeddings = "gelu", True, False
  c.loss.objective = "seq2seq"
  c.sample.num_samples = 0
  if size == "tiny":
    c.data.name, c.data.seq_len = "reverse_strings", 40
    c.train.batch_size, c.train.steps, c.optim.lr, c.optim.warmup_steps = 32, 300, 3e-3, 50
    c.train.eval_every = c.train.checkpoint_every = 100
  else:
    m.vocab_size, m.attention_head_dim, m.max_len, m.dropout_rate = 32128, 64, 512, 0.1
    m.dtype, m.scan_layers = "bfloat16", True
    c.data.name, c.data.source_key, c.data.target_key = "wmt14_translate/de-en", "en", "de"
    c.data.tokenizer, c.data.tokenizer_vocab_size = "sentencepiece", 32000
    c.data.seq_len, c.data.source_len = 114, 512
    c.train.batch_size, c.train.steps = 128, 524_288  # 2^19 steps of 128 x 512, as in the paper.
    c.optim.lr, c.optim.schedule, c.optim.warmup_steps = 1e-2, "rsqrt", 10_000
    c.train.eval_every = c.train.checkpoint_every = 5000
  return c
