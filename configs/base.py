"""The base config: every key jtrans reads is declared here, with what it means.

Not run by itself; recipes such as configs/lm.py start from `get_config()` and change
values. Any key can be overridden on the command line as `--config.a.b=value`; a key that
is not declared here fails at start-up with its name (the config is locked).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, dropout and data order; a run is a function of it.

  c.model = m = ml_collections.ConfigDict()
  m.family = "decoder"  # Model family: "decoder" (GPT-style LM).
  m.vocab_size = 259  # Embedding rows; at least the tokenizer's vocabulary (byte: 259).
  m.num_layers = 4  # Transformer blocks.
  m.num_heads = 4  # Query heads; must divide embed_dim.
  m.num_kv_heads = 0  # Key/value heads (grouped-query attention); 0 = num_heads.
  m.embed_dim = 128  # Model width d_model.
  m.mlp_dim = 512  # Hidden units of the feed-forward block (usually 4 x embed_dim).
  m.max_len = 256  # Longest sequence (size of the learned position table).
  m.dropout_rate = 0.0  # Dropout on embeddings and residual branches.
  m.positions = "learned"  # "learned" or "sinusoidal" position encoding.
  m.tie_embeddings = True  # Output logits use the input embedding matrix.
  m.norm = "layernorm"  # "layernorm" or "rmsnorm".
  m.activation = "gelu"  # Feed-forward nonlinearity: "gelu", "relu" or "silu".
  m.use_bias = True  # Biases in dense layers and LayerNorm.
  m.attention_impl = "xla"  # "xla" (einsum), "jax" (jax.nn.dot_product_attention picks; cuDNN on GPU) or "cudnn".
  m.scan_layers = False  # nn.scan over the blocks: compile time independent of depth.
  m.remat = "none"  # Recompute activations: "none", "full", or a jax.checkpoint_policies name.
  m.dtype = "float32"  # Compute dtype of activations and matmuls ("bfloat16" on accelerators).
  m.param_dtype = "float32"  # Storage dtype of parameters (and so of the optimizer state).

  c.data = d = ml_collections.ConfigDict()
  d.name = "pydoc_topics"  # TFDS data set name; pydoc_topics is jtrans's embedded corpus.
  d.data_dir = ""  # TFDS data_dir (local or gs://); "" = TFDS's default (~/tensorflow_datasets).
  d.text_key = "text"  # Feature that holds the text.
  d.tokenizer = "byte"  # Tokenizer: "byte" (ByT5 ids: pad 0, eos 1, unk 2, byte + 3).
  d.train_split = "train"  # Split to train on.
  d.eval_split = "validation"  # Split to evaluate on.
  d.seq_len = 128  # Tokens per training row (at most model.max_len).
  d.segment_ids = False  # Packed documents do not attend to each other; positions restart per document.
  d.shuffle_window = 4096  # Training rows shuffled together, so a batch mixes many documents.
  d.worker_count = 0  # grain worker processes (0 = in the main process).

  c.train = t = ml_collections.ConfigDict()
  t.steps = 1000  # Optimizer steps in the whole run.
  t.batch_size = 32  # Global batch (rows), split over the mesh's data and fsdp axes.
  t.grad_accum_steps = 1  # Micro-batches per step (gradients summed): same result, less memory.
  t.engine = "jit"  # "jit" (any mesh, sharded by the rules) or "pmap" (pure data parallel).
  t.log_every = 50  # Steps between progress lines and train metrics.
  t.eval_every = 500  # Steps between evaluations (and one at the end).
  t.eval_batches = 0  # Batches per evaluation; 0 = the whole eval split.
  t.checkpoint_every = 500  # Steps between checkpoints (and one at the end).
  t.keep_checkpoints = 2  # Checkpoints kept on disk.
  t.async_checkpoints = True  # Write checkpoints in the background.
  t.peak_flops_per_device = 0.0  # Peak FLOP/s for MFU; 0 = known chip's bf16 peak, else measured float32 matmul peak.

  c.optim = o = ml_collections.ConfigDict()
  o.lr = 1e-3  # Peak learning rate.
  o.schedule = "cosine"  # After warm-up: "cosine", "linear", "constant" or "rsqrt".
  o.warmup_steps = 100  # Linear warm-up from 0 to lr.
  o.final_lr_ratio = 0.1  # cosine/linear end at lr x this at the last step.
  o.b1 = 0.9  # Adam beta1.
  o.b2 = 0.99  # Adam beta2.
  o.eps = 1e-8  # Adam epsilon.
  o.weight_decay = 0.1  # Decoupled weight decay (AdamW) on weight matrices.
  o.decay_embeddings = False  # Whether embeddings are decayed too (biases and norms never are).
  o.grad_clip = 1.0  # Global-norm gradient clipping; 0 disables.

  c.loss = l = ml_collections.ConfigDict()
  l.label_smoothing = 0.0  # Label smoothing mass (0.1 in Attention Is All You Need).
  l.z_loss = 0.0  # Coefficient of the log(Z)^2 penalty (1e-4 in PaLM).

  c.mesh = ms = ml_collections.ConfigDict()
  ms.data = -1  # Data-parallel axis size; -1 = the devices the other axes leave.
  ms.fsdp = 1  # Fully-sharded data-parallel axis size (parameters sharded, batch split).
  ms.tensor = 1  # Tensor-parallel axis size (heads and MLP units split).
  ms.dcn_data = 1  # Slices along data over the data-centre network (multi-slice; a process off TPU).
  ms.dcn_fsdp = 1  # Slices along fsdp over the data-centre network.
  ms.dcn_tensor = 1  # Slices along tensor over the data-centre network (rarely wise).
  # Logical axis name -> mesh axes; parameters and activations name logical axes only.
  ms.rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", "tensor"),
              ("heads", "tensor"), ("mlp", "tensor"), ("kv", None), ("length", None), ("layers", None))

  c.sample = s = ml_collections.ConfigDict()
  s.prompt = "The "  # Text the final samples continue.
  s.num_samples = 3  # Continuations printed at the end of training (0 = none).
  s.length = 120  # Tokens generated per continuation.
  s.temperature = 0.8  # Softmax temperature for sampling.
  return c
