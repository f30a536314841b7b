"""The base config: every key jtrans reads is declared here, with what it means.

Not run by itself; recipes such as configs/lm.py start from `get_config()` and change
values. Any key can be overridden on the command line as `--config.a.b=value`; a key that
is not declared here fails at start-up with its name (the config is locked).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, dropout and data order; a run is a function of it.

  c.experiment = e = ml_collections.ConfigDict()
  # The experiments/<name>/ recipe this run follows ("" = none) and its variant ("cpu", "ci",
  # ...), kept in config.json: what `jtrans.experiments.check` compares the run against.
  e.name = ""  # The recipe's directory name.
  e.variant = ""  # The variant (the recipe's config.py argument).

  c.model = m = ml_collections.ConfigDict()
  m.family = "decoder"  # "decoder" (GPT/Llama LM), "encoder" (BERT MLM), "encoder_decoder" (Transformer, T5), "vit" or "clip".
  m.vocab_size = 259  # Embedding rows; at least the tokenizer's vocabulary (byte: 259).
  m.num_layers = 4  # Transformer blocks (of the decoder, in an encoder-decoder).
  m.num_encoder_layers = 0  # Encoder blocks of an encoder-decoder; 0 = num_layers.
  m.num_heads = 4  # Query heads; must divide embed_dim unless attention_head_dim is set.
  m.num_kv_heads = 0  # Key/value heads (grouped-query attention; 1 = multi-query); 0 = num_heads.
  m.attention_head_dim = 0  # Width of each head; 0 = embed_dim / num_heads.
  m.embed_dim = 128  # Model width d_model.
  m.mlp_dim = 512  # Hidden units of the feed-forward block (usually 4 x embed_dim).
  m.max_len = 256  # Longest sequence (size of the learned position table).
  m.dropout_rate = 0.0  # Dropout on embeddings and residual branches.
  # "learned", "sinusoidal", "rotary" (RoPE), "relative" (T5 buckets), "none"; ViT: "learned" or
  # "sincos2d" (a fixed 2-D sine-cosine table over the patch grid, big_vision's plain ViT).
  m.positions = "learned"
  m.rope_theta = 10_000.0  # Rotary base period.
  m.relative_buckets = 32  # T5 relative position buckets...
  m.relative_max_distance = 128  # ...and the distance beyond which they all share one.
  m.tie_embeddings = True  # Output logits use the input embedding matrix.
  m.scale_embeddings = False  # Token embeddings times sqrt(embed_dim) (Vaswani et al.).
  m.embed_norm = False  # A norm right after the embeddings (BERT).
  m.type_vocab_size = 0  # Token-type (sentence A/B) embeddings (BERT: 2); 0 = none.
  m.output_bias = False  # A learned bias on the logits (BERT's MLM head, Marian).
  m.logits_scale = 1.0  # Multiplies the last hidden state before tied logits (T5: embed_dim^-0.5).
  m.norm = "layernorm"  # "layernorm", "rmsnorm" or "none" (no norms at all).
  m.norm_position = "pre"  # "pre": x + f(norm(x)), with a final norm; "post": norm(x + f(x)) (BERT, Vaswani et al.).
  m.norm_epsilon = 1e-5  # Added to the variance in norms.
  # Feed-forward nonlinearity: "gelu" (tanh form), "gelu_exact", "relu" or "silu".
  m.activation = "gelu"
  # act(x W_gate) * (x W_up): SwiGLU with silu (Llama), GeGLU with gelu (T5 v1.1).
  m.gated_mlp = False
  m.use_bias = True  # Biases in dense layers and LayerNorm.
  # Weight matrices start as normal(init_std) (GPT-2, BERT: 0.02); 0 = Glorot/Xavier,
  # sqrt(2 / (fan_in + fan_out)) per matrix (Vaswani et al.), which keeps a narrow model's
  # sub-layers from starting near zero. With scale_residual_init the projections that write
  # into the residual stream are divided by sqrt(2 x layers) (GPT-2; BERT and T5 do not).
  m.init_std = 0.02  # Std of weight matrices' and token embeddings' init; 0 = Glorot (above).
  m.scale_residual_init = True  # GPT-2's 1/sqrt(2 x layers) on residual projections (above).
  m.position_init_std = 0.01  # Std of the learned position table's init (GPT-2: 0.01, BERT: 0.02).
  # "standard", "mup" (Yang et al. 2022: hyperparameters tuned at base_embed_dim transfer across
  # width) or "completep" (muP, and across depth from base_num_layers; Dey et al. 2025). See
  # jtrans/parametrization.py for what each scales.
  m.parametrization = "standard"
  m.base_embed_dim = 0  # muP's base width (its hyperparameters are the ones tuned); 0 = embed_dim.
  m.base_num_layers = 0  # CompleteP's base depth; 0 = num_layers.
  m.depth_alpha = 1.0  # CompleteP's branch multiplier (base / layers)^alpha; 0.5 = depth-muP.
  m.image_size = 32  # ViT: square images of image_size pixels a side...
  m.patch_size = 4  # ...cut into patch_size x patch_size patches...
  m.num_channels = 3  # ...of num_channels channels,
  m.num_classes = 10  # ...classified into num_classes classes,
  m.pool = "cls"  # ...from the class token ("cls") or the mean of the patches ("mean").
  m.pre_logits = False  # ViT: a tanh layer of embed_dim before the head (big_vision's rep_size).
  m.head_zero_init = False  # ViT: the head's kernel starts at 0 (big_vision's plain ViT).
  # CLIP (family "clip"): the image tower is the ViT of image_size...head_zero_init (its head
  # unused; embed_norm=True is CLIP's pre-LayerNorm); the text tower has vocab_size and max_len
  # and the text_* shape (0 = the image tower's value); both project into projection_dim.
  m.projection_dim = 128  # Width of the shared image-text embedding space.
  m.text_embed_dim = 0  # Text tower width (0 = embed_dim).
  m.text_num_layers = 0  # Text tower blocks (0 = num_layers).
  m.text_num_heads = 0  # Text tower heads (0 = num_heads).
  m.text_mlp_dim = 0  # Text tower MLP width (0 = mlp_dim).
  m.text_causal = True  # Causal text attention as in CLIP; False: bidirectional.
  m.logit_scale_init = 2.6592  # Initial log temperature: CLIP's log(1 / 0.07); SigLIP's log(10).
  m.logit_bias_init = 0.0  # Initial logit bias (SigLIP: -10; the softmax loss ignores it).
  # "xla" (einsum), "jax" (jax.nn.dot_product_attention picks), "blockwise" (online softmax
  # over key blocks with its own backward: no [q, kv] matrix), the fused kernels "cudnn"
  # (NVIDIA GPUs) and "splash" (TPUs), which run blockwise, logging why, for what they cannot
  # take, or "auto": the kernel of the chips the step is compiled for (blockwise on CPU).
  m.attention_impl = "xla"
  # Sliding-window attention: each query sees this many keys before it (causal, Mistral) or on
  # each side (bidirectional, Longformer's local attention); 0 = every key.
  m.attention_window = 0
  # Longformer's global tokens: the first n positions (a [CLS], a question) see every position
  # and every position sees them; 0 = none. With attention_window, the two are a union.
  m.attention_global_tokens = 0
  # BigBird's block-sparse attention over blocks of this many positions (0 = off): each query
  # block sees sparse_window blocks either side, the first sparse_global blocks (which see
  # everything) and sparse_random random blocks drawn from sparse_seed. Linear in length on
  # attention_impl="blockwise"; the dense paths apply the same mask.
  m.attention_sparse_block = 0
  m.attention_sparse_window = 1  # BigBird: window blocks either side of the query's block,
  m.attention_sparse_global = 1  # ...global blocks (the first ones),
  m.attention_sparse_random = 3  # ...random blocks per query block,
  m.attention_sparse_seed = 0  # ...drawn from this seed (the same layout in every layer).
  m.attention_block_q = 256  # attention_impl="blockwise": query rows per block...
  m.attention_block_kv = 256  # ...and key rows per block (lengths need not divide them).
  m.scan_layers = False  # nn.scan over the blocks: compile time independent of depth.
  m.remat = "none"  # Recompute activations: "none", "full", or a jax.checkpoint_policies name.
  m.dtype = "float32"  # Compute dtype of activations and matmuls ("bfloat16" on accelerators).
  m.param_dtype = "float32"  # Storage dtype of parameters (and so of the optimizer state).

  c.data = d = ml_collections.ConfigDict()
  # TFDS data set name, or "files" for your own files (train_files below). jtrans builds its own
  # on demand: pydoc_topics (embedded corpus), modular_arithmetic[/add97|sub97|mul97|div97|add113_30],
  # copy_strings, reverse_strings, synthetic_images, digits (scikit-learn's 8x8 images),
  # digit_captions (the digits with templated captions),
  # tiny_shakespeare_file (needs manual_dir).
  # Any other name is a TFDS data set prepared as array_record in data_dir (e.g. lm1b,
  # wmt14_translate/de-en, c4/en, imagenet2012: the README's "TFDS data sets" says how).
  d.name = "pydoc_topics"
  d.data_dir = ""  # TFDS data_dir (local or gs://); "" = TFDS's default (~/tensorflow_datasets).
  d.manual_dir = ""  # Local files a builder reads (tiny_shakespeare_file: input.txt); "" = <data_dir>/downloads/manual.
  d.train_files = ""  # name="files": glob(s) of training files, comma-separated; "**" recurses.
  d.eval_files = ""  # name="files": glob(s) of evaluation files.
  # name="files": "text" (a document per file) or "jsonl" (a JSON object per line).
  d.file_format = "text"
  d.text_key = "text"  # Feature (or JSON field) that holds the text.
  # "byte" (ByT5 ids: pad 0, eos 1, unk 2, byte + 3), "sentencepiece", "word" (whole words
  # and punctuation marks: symbolic tasks), "gpt2_bpe" or "hf" (a Hugging Face directory's).
  d.tokenizer = "byte"
  # sentencepiece: a .model file (word: a tokenizer.json), or "" = train one on the train split,
  # cached in <data_dir>/jtrans_tokenizers/; gpt2_bpe: a tokenizer.json, or a folder with it or
  # vocab.json + merges.txt; hf: the model directory.
  d.tokenizer_path = ""
  d.tokenizer_vocab_size = 8000  # Pieces (words) of a tokenizer trained here (tokenizer_path "").
  d.train_split = "train"  # Split to train on.
  d.eval_split = "validation"  # Split to evaluate on.
  d.seq_len = 128  # Tokens per training row (at most model.max_len); seq2seq: target tokens.
  d.source_len = 0  # seq2seq: source tokens per row (encoder length); 0 = seq_len.
  d.source_key = "source"  # seq2seq: feature that holds the source text.
  d.target_key = "target"  # seq2seq: feature that holds the target text.
  d.image_key = "image"  # classification: feature with uint8 [H, W, C] images.
  d.label_key = "label"  # classification: feature with integer labels.
  d.caption_key = "caption"  # contrastive: feature with each image's caption (text).
  # contrastive evaluation: zero-shot accuracy of classifying the eval images (labels in
  # label_key) by prompts alone: every "|"-separated template (its "{}" the class name) filled with
  # each of these comma-separated class names (label 0 first); "" = none.
  d.class_names = ""
  d.prompt_templates = "a photo of a {}."  # The zero-shot prompt templates (above).
  # classification: pixels in [0, 1] are normalised per channel as (x - image_mean) / image_std
  # (ViT's 0.5 and 0.5 give [-1, 1]; ImageNet's: (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225)).
  d.image_mean = (0.5, 0.5, 0.5)  # Per-channel mean (see above).
  d.image_std = (0.5, 0.5, 0.5)  # Per-channel standard deviation (see above).
  # classification training: "none" or "inception_crop_flip" (a random 8-100% area crop of
  # aspect 3/4 to 4/3 resized to model.image_size, flipped left-right half the time).
  d.image_augment = "none"
  # inception_crop_flip: the smallest crop, as a fraction of the image's area (Inception's 0.08;
  # big_vision's plain ViT recipe takes 0.05).
  d.crop_area_min = 0.08
  # classification training, after the crop and flip: RandAugment's number of operations per
  # image (0: off; big_vision's randaug(2, 10) is 2) and their shared magnitude (0 to 10).
  d.randaugment_layers = 0  # RandAugment operations per image (above).
  d.randaugment_magnitude = 10  # Their shared magnitude (above).
  # classification training: Mixup (Zhang et al. 2018) as big_vision draws it: one ratio per
  # batch, max(r, 1 - r) with r ~ Beta(mixup, mixup), each image blended with the batch's next
  # one and the loss with both labels in that ratio (0: off; big_vision's plain ViT: 0.2).
  d.mixup = 0.0
  # Evaluation, and training without augmentation: the shorter side is resized to
  # model.image_size / crop_fraction and the centre square cut out (ImageNet's 0.875: 256 -> 224;
  # 1.0 keeps an image that is already image_size square as it is).
  d.crop_fraction = 1.0
  # Packed documents do not attend to each other; positions restart per document.
  d.segment_ids = False
  # How language-model training rows are drawn: "packed" (the documents in a shuffled order,
  # concatenated and cut into consecutive rows, shuffled within shuffle_window rows: every
  # token once per epoch) or "windows" (each row a window at a random start of the whole
  # split's token stream, as nanoGPT's get_batch: i.i.d. batches, the stream held in memory).
  # Evaluation always reads the split once, in order. "prompt_response": each record one row,
  # source_key's tokens + target_key's tokens (+ EOS with response_eos), padded to
  # seq_len, with loss on the target's tokens only (grokking's answer-only loss; a prompt ->
  # response fine-tune); train and eval alike.
  # "chat": each record a conversation (messages_key) or a prompt/response pair, rendered
  # with chat_template, packed whole with segment ids, loss on the assistant's tokens
  # (jtrans/data/chat.py); --mode=generate then takes each prompt as a user's turn.
  d.sampling = "packed"
  d.messages_key = "messages"  # chat: the field of {"role", "content"} turns; "" = pairs.
  # chat: "" = the tokenizer directory's own template (else "default"), "default" (Zephyr's
  # <|user|>/<|assistant|> turns, each ending with EOS), or a .jinja file's path.
  d.chat_template = ""
  # prompt_response: the response ends with EOS, which carries loss (generation learns to stop);
  # False: no EOS, so accuracy is the response tokens' alone (a one-token answer's accuracy).
  d.response_eos = True
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
  # seq2seq: at each evaluation, decode this many eval-split sources (greedy, or beam search
  # with sample.num_beams, up to data.seq_len tokens) and log exact_match and sacrebleu's BLEU
  # against their targets (the signature in the log); 0 = none.
  t.eval_generate = 0
  t.checkpoint_every = 500  # Steps between checkpoints (and one at the end).
  t.keep_checkpoints = 2  # Checkpoints kept on disk.
  # A Hugging Face model directory (config.json + safetensors) whose weights replace the random
  # initialisation (fine-tuning); config.model must describe it (configs/hf.py reads it from there).
  t.init_from = ""
  # A step whose loss, gradient or update is NaN/Inf: "stop" (no checkpoint is written after it;
  # the error names the step) or "skip" (its update is dropped and counted as skipped_steps).
  t.nan_policy = "stop"
  t.max_skipped_steps = 10  # nan_policy="skip": stop once this many steps in a row were skipped.
  t.async_checkpoints = True  # Write checkpoints in the background.
  # Peak FLOP/s for MFU; 0 = known chip's bf16 peak, else measured float32 matmul peak.
  t.peak_flops_per_device = 0.0

  c.finetune = f = ml_collections.ConfigDict()
  # Fine-tuning (jtrans/finetune): "full" trains every parameter (or those `trainable` names);
  # "lora" adds low-rank adapters to the kernels `lora_targets` matches and trains them alone;
  # "prefix" (decoders) trains keys and values before every sequence in each layer alone;
  # "prompt" (decoders) trains input vectors before every sequence alone.
  f.method = "full"
  # Comma-separated regexes on "/"-joined parameter paths ("decoder/block_0/mlp/wi/kernel",
  # "lora/decoder/block_0/attention/query/a"): the leaves that train; "" = all of them for
  # "full", the adapters for "lora". The others are frozen: no gradient, no optimizer state.
  f.trainable = ""
  f.frozen_dtype = ""  # "bfloat16": frozen parameters stored in it (trained ones stay float32).
  f.lora_targets = ""  # Regex on kernel module paths, e.g. "attention/(query|value)$".
  f.lora_rank = 8  # LoRA's r.
  f.lora_alpha = 16.0  # LoRA's alpha: the update is (alpha / r) A B.
  f.lora_dropout = 0.0  # Dropout on the adapters' input while training (Hu et al.'s GPT-2: 0.1).
  # A Hugging Face PEFT LoRA directory whose adapters start the run (instead of fresh ones; its
  # modules, r and alpha must be the ones lora_targets, lora_rank and lora_alpha give).
  f.lora_from = ""
  f.prefix_length = 16  # Virtual tokens: prefix tuning's keys and values, prompt tuning's vectors.
  # Prefix tuning's reparametrisation (Li & Liang 2021): an embedding [prefix_length, embed]
  # through an MLP of this width (tanh) gives the keys and values; 0 = train them directly.
  f.prefix_hidden = 512

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
  # "lm" (next token), "mlm" (masked LM), "seq2seq" (teacher forcing), "span_corruption"
  # (T5 pre-training on plain text), "classification" or "contrastive" (CLIP image-text pairs).
  l.objective = "lm"
  # mlm: fraction of tokens predicted; of those 80% masked, 10% random, 10% kept.
  l.mask_rate = 0.15
  # contrastive: "softmax" (CLIP's symmetric InfoNCE) or "sigmoid" (SigLIP's pairwise loss);
  # the negatives are the whole global batch's.
  l.contrastive = "softmax"
  # diffusion (DiT): the noise schedule ("linear": Ho et al.'s 1e-4..0.02, DiT's; "cosine":
  # Nichol & Dhariwal's) over diffusion_steps steps; each training image's label is dropped to
  # the null class with probability class_dropout (classifier-free guidance needs it; DiT: 0.1).
  l.noise_schedule = "linear"
  l.diffusion_steps = 1000  # diffusion: T, the forward process's steps.
  l.class_dropout = 0.1  # diffusion: labels dropped to the null class while training.
  l.mask_token_id = 2  # mlm: the [MASK] id (the byte tokenizer's unk; BERT's vocabulary: 103).
  # span_corruption (T5): rows of plain text, noise_density of their tokens dropped in spans of
  # mean_noise_span_length, each span a sentinel (the vocabulary's last ids); the encoder
  # reads data.source_len tokens, the decoder data.seq_len (at least what the spans need).
  l.noise_density = 0.15  # Fraction of each row's tokens dropped (T5: 0.15).
  l.mean_noise_span_length = 3.0  # Mean length of a dropped span (T5: 3).
  l.label_smoothing = 0.0  # Label smoothing mass (0.1 in Attention Is All You Need).
  l.z_loss = 0.0  # Coefficient of the log(Z)^2 penalty (1e-4 in PaLM).
  # Space-separated words (one token each): the only classes the loss and accuracy score, as an
  # output layer of just these would (Nanda et al.'s 113 answers of a + b mod 113); "" = all.
  l.output_words = ""
  # Token objectives: compute the logits and loss this many positions at a time, so the
  # float32 [batch, length, vocab] logits never exist at once (large vocabularies, long
  # context); same loss and gradients. 0 = all at once.
  l.chunk_length = 0

  c.mesh = ms = ml_collections.ConfigDict()
  ms.data = -1  # Data-parallel axis size; -1 = the devices the other axes leave.
  ms.fsdp = 1  # Fully-sharded data-parallel axis size (parameters sharded, batch split).
  ms.tensor = 1  # Tensor-parallel axis size (heads and MLP units split).
  # Slices along data over the data-centre network (multi-slice; a process off TPU).
  ms.dcn_data = 1
  ms.dcn_fsdp = 1  # Slices along fsdp over the data-centre network.
  ms.dcn_tensor = 1  # Slices along tensor over the data-centre network (rarely wise).
  # Logical axis name -> mesh axes; parameters and activations name logical axes only.
  ms.rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("length", None),
    ("layers", None),
  )

  c.sample = s = ml_collections.ConfigDict()
  s.prompt = "The "  # Text the final samples continue.
  s.num_samples = 3  # Continuations printed at the end of training (0 = none).
  s.length = 120  # Tokens generated per continuation (--mode=generate: at most; EOS ends a row).
  s.temperature = 0.8  # Softmax temperature for sampling; 0 = greedy (argmax).
  s.top_k = 0  # Sample among the k most likely tokens only; 0 = all.
  s.top_p = 1.0  # Nucleus sampling: the smallest set of likeliest tokens with this mass; 1.0 = all.
  s.num_beams = 1  # --mode=generate: beam search with this many beams (deterministic); 1 = sample.
  # Beam search ranks log-probability / penalty(length) ** alpha, this alpha...
  s.length_penalty = 0.6
  # ...penalty "gnmt": (5 + length) / 6 (Wu et al. 2016); "hf": length.
  s.length_penalty_style = "gnmt"
  # DiT (--mode=generate, and num_samples images per class after training, a grid in
  # <workdir>/samples.png): "ddpm" (ancestral, every step) or "ddim" (deterministic, eta 0)...
  s.sampler = "ddim"
  s.diffusion_steps = 50  # ...over this many evenly spaced steps (ddim; 0 = all),
  s.guidance = 4.0  # ...with this classifier-free guidance scale (1 = the conditional model).
  # DiT: the workdir of an image classifier run (e.g. experiments/vit_digits) that labels the
  # samples; the share labelled as their class is logged as sample_accuracy; "" = none.
  s.classifier = ""
  return c
