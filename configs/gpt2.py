"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"), Table 2.

Decoder-only, pre-LN, GELU, LayerNorm and dense biases, learned positions, tied embeddings,
vocabulary 50257 (GPT-2's byte-level BPE), context 1024:

| size | layers | d_model | heads | parameters (published) | jtrans count |
|---|---:|---:|---:|---:|---:|
| small | 12 | 768 | 12 | 124M | 124,439,808 |
| medium | 24 | 1024 | 16 | 355M | 354,823,168 |
| large | 36 | 1280 | 20 | 774M | 774,030,080 |
| xl | 48 | 1600 | 25 | 1558M | 1,557,611,200 |

Count the parameters (no training; the tree is traced with jax.eval_shape, so xl costs no memory):
  python run.py --mode=plan --config=configs/gpt2.py:small
  python run.py --mode=plan --config=configs/gpt2.py:xl
Expected: "124,439,808 parameters" for small (the published 124M) and 1,557,611,200 for xl
(1558M), equal to the real parameter tree (tests/flops_test.py checks all four sizes).

Training needs GPT-2 BPE data: point config.data at a TFDS data set or your own files and
config.data.tokenizer=gpt2_bpe at GPT-2's tokenizer files; the batch (512 x 1024 tokens) and
steps follow the paper's setup on an accelerator pod, e.g.
  python run.py --config=configs/gpt2.py:small --workdir=runs/gpt2_small --config.data.name=...
Fine-tune a Hugging Face GPT-2 directory instead with configs/hf.py.

`tiny` is the same architecture at 4 layers x 128 on the embedded corpus with bytes, and
trains in about a minute on a laptop CPU:
  python run.py --config=configs/gpt2.py:tiny --workdir=runs/gpt2_tiny
Expected (300 steps of 16 x 64 bytes, 2 CPU cores, about 2 minutes): validation loss 2.16
nats/byte, accuracy 0.40 (the split's unigram entropy is 3.25).
"""

import ml_collections

from configs import base

# name: (num_layers, embed_dim, num_heads)
SIZES = {
  "small": (12, 768, 12),
  "medium": (24, 1024, 16),
  "large": (36, 1280, 20),
  "xl": (48, 1600, 25),
}


def get_config(size: str = "small") -> ml_collections.ConfigDict:
  if size == "tiny":
    c = base.get_config()  # Its defaults are GPT-2's options at 4 x 128, on bytes.
    c.data.seq_len, c.train.batch_size, c.train.steps, c.optim.lr = 64, 16, 300, 3e-3
    c.train.eval_every = c.train.checkpoint_every = 100
    return c
  if size not in SIZES:
    raise ValueError(f"configs/gpt2.py: size {size!r} is not one of {sorted(SIZES) + ['tiny']}.")
  layers, width, heads = SIZES[size]
  c = base.get_config()
  m = c.model
  m.vocab_size, m.max_len = 50257, 1024
  m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = layers, width, heads, 4 * width
  m.positions, m.tie_embeddings, m.use_bias = "learned", True, True
  m.norm, m.activation, m.dtype = "layernorm", "gelu", "bfloat16"
  c.data.seq_len = 1024
  c.train.batch_size, c.train.steps = 512, 100_000
  c.train.eval_every = c.train.checkpoint_every = 5000
  c.optim.lr, c.optim.warmup_steps = 6e-4, 2000  # The paper tuned lr per size, unpublished.
  c.sample.num_samples = 0
  return c
