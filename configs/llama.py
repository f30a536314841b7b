"""A modern decoder-only LM (Llama: Touvron et al. 2023): RMSNorm, rotary positions, SwiGLU,
grouped-query attention, no biases, an untied output matrix.

| size | layers | d_model | heads | kv heads | d_ff | vocab | parameters |
|---|---:|---:|---:|---:|---:|---:|---:|
| tiny | 4 | 128 | 4 | 2 | 352 | 259 (bytes) | 0.7M |
| 1b (Llama 3.2 1B) | 16 | 2048 | 32 | 8 | 8192 | 128256 | 1.50B untied (1.24B published, tied) |
| 7b (Llama 2 7B) | 32 | 4096 | 32 | 32 | 11008 | 32000 | 6.74B |

  python run.py --config=configs/llama.py:tiny --workdir=runs/llama_tiny   # about a minute on a CPU
  python run.py --mode=plan --config=configs/llama.py:7b                    # counts, no training
Expected for `tiny` (300 steps of 16 x 64 bytes, 2 CPU cores, about 3 minutes): validation
loss 1.63 nats/byte, accuracy 0.55; configs/gpt2.py:tiny, the same size with GPT-2's options,
reaches 2.16 in the same steps. Fine-tune a Hugging Face Llama directory with configs/hf.py.

1b and 7b pre-train on TFDS's c4/en (the `text` of C4's 365M English documents; evaluated on its
validation split) with a SentencePiece vocabulary of the model's size, trained on a sample of the
train split and cached beside the data on first use (train it before a multi-host launch:
python -m jtrans.data.train_tokenizer --config=configs/llama.py:7b --config.data.data_dir=...).
Prepare c4/en once as the README's "TFDS data sets" says, then e.g.
  python run.py --config=configs/llama.py:7b --workdir=gs://bucket/llama_7b \
      --config.data.data_dir=gs://bucket/tensorflow_datasets
"""

import ml_collections

from configs import base

# name: (num_layers, embed_dim, num_heads, num_kv_heads, mlp_dim, vocab_size, max_len, rope_theta)
SIZES = {
  "tiny": (4, 128, 4, 2, 352, 259, 256, 10_000.0),
  "1b": (16, 2048, 32, 8, 8192, 128256, 8192, 500_000.0),
  "7b": (32, 4096, 32, 32, 11008, 32000, 4096, 10_000.0),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/llama.py: size {size!r} is not one of {sorted(SIZES)}.")
  layers, width, heads, kv_heads, mlp, vocab, max_len, theta = SIZES[size]
  c = base.get_config()
  m = c.model
  m.num_layers, m.embed_dim, m.num_heads, m.num_kv_heads, m.mlp_dim = (
    layers,
    width,
    heads,
    kv_heads,
    mlp,
  )
  m.vocab_size, m.max_len, m.rope_theta = vocab, max_len, theta
  m.positions, m.norm, m.norm_epsilon = "rotary", "rmsnorm", 1e-5
  m.activation, m.gated_mlp, m.use_bias, m.tie_embeddings = "silu", True, False, False
  if size == "tiny":
    c.data.seq_len, c.train.batch_size, c.train.steps, c.optim.lr = 64, 16, 300, 3e-3
    c.train.eval_every = c.train.checkpoint_every = 100
  else:
    m.dtype, m.scan_layers, m.remat = "bfloat16", True, "dots_with_no_batch_dims_saveable"
    c.data.name, c.data.tokenizer, c.data.tokenizer_vocab_size = "c4/en", "sentencepiece", vocab
    c.data.seq_len, c.train.batch_size, c.train.steps = 4096, 1024, 250_000
    c.optim.lr, c.optim.warmup_steps, c.optim.final_lr_ratio = 3e-4, 2000, 0.1
    c.optim.b2, c.optim.weight_decay, c.optim.grad_clip = 0.95, 0.1, 1.0
    c.train.eval_every = c.train.checkpoint_every = 5000
    c.sample.num_samples = 0
  return c
