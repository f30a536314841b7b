"""The typed model description that modules take (never the whole ConfigDict)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from jtrans import attention
from jtrans.parametrization import PARAMETRIZATIONS

# "sincos2d": ViT's fixed 2-D sine-cosine table over the patch grid (big_vision's plain ViT).
POSITIONS = ("learned", "sinusoidal", "rotary", "relative", "none", "sincos2d")
NORMS = ("layernorm", "rmsnorm", "none")
NORM_POSITIONS = ("pre", "post")
# "gelu" is the tanh approximation (GPT-2's gelu_new, T5's gated-gelu); "gelu_exact" the erf
# form (BERT, ViT); "quick_gelu" x sigmoid(1.702 x) (OpenAI's CLIP).
ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu", "quick_gelu")
# "clip": a ViT image tower and a text tower projected into one space (Radford et al. 2021).
# "dit": a diffusion Transformer that predicts the noise in images (Peebles & Xie 2023).
FAMILIES = ("decoder", "encoder", "encoder_decoder", "vit", "clip", "dit")
POOLS = ("cls", "mean")
# "none": keep every activation; "full": recompute the whole block in the backward pass;
# other names are jax.checkpoint_policies (what to save, the rest is recomputed).
REMAT_POLICIES = (
  "none",
  "full",
  "dots_saveable",
  "dots_with_no_batch_dims_saveable",
  "nothing_saveable",
  "everything_saveable",
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and options of a Transformer; see configs/base.py for each field's meaning."""

  family: str = "decoder"
  vocab_size: int = 259
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 0  # 0: same as num_heads.
  embed_dim: int = 128
  attention_head_dim: int = 0  # Per-head width; 0 = embed_dim / num_heads (T5 sets its d_kv).
  mlp_dim: int = 512
  max_len: int = 256
  dropout_rate: float = 0.0
  positions: str = "learned"
  tie_embeddings: bool = True
  norm: str = "layernorm"
  norm_position: str = "pre"  # "post": BERT and the original Transformer (no final norm).
  norm_epsilon: float = 1e-5
  activation: str = "gelu"
  gated_mlp: bool = False  # act(x W_gate) * (x W_up): SwiGLU with silu, GeGLU with gelu.
  use_bias: bool = True
  init_std: float = (
    0.02  # Std of weight matrices' normal init; 0 = Glorot (see layers.weight_init).
  )
  scale_residual_init: bool = True  # GPT-2: residual projections' std / sqrt(2 x layers).
  position_init_std: float = 0.01  # Learned position table's init std (GPT-2 0.01, BERT 0.02).
  # How init, multipliers and learning rates scale with width and depth (parametrization.py):
  # "standard", "mup" (relative to base_embed_dim) or "completep" (muP, and depth relative to
  # base_num_layers with branch multipliers (base / layers)^depth_alpha). 0: the model's own.
  parametrization: str = "standard"
  base_embed_dim: int = 0
  base_num_layers: int = 0
  depth_alpha: float = 1.0
  rope_theta: float = 10_000.0
  relative_buckets: int = 32  # T5 relative position buckets and the distance they span.
  relative_max_distance: int = 128
  scale_embeddings: bool = False  # Multiply token embeddings by sqrt(embed_dim) (Vaswani et al.).
  embed_norm: bool = False  # A norm right after the embeddings (BERT).
  type_vocab_size: int = 0  # Token-type (segment A/B) embeddings (BERT); 0 = none.
  # A bias on the logits (BERT's MLM decoder, Marian's final_logits_bias).
  output_bias: bool = False
  logits_scale: float = 1.0  # Multiplies the final hidden state before tied logits (T5: d^-0.5).
  num_encoder_layers: int = 0  # Encoder depth of an encoder-decoder; 0 = num_layers.
  image_size: int = 32  # ViT: square input images of image_size^2 pixels, num_channels each.
  patch_size: int = 4
  num_channels: int = 3
  num_classes: int = 10  # ViT classification head; DiT's class labels (plus a null class).
  pool: str = "cls"  # ViT: classify the class token ("cls") or the mean of patches ("mean").
  pre_logits: bool = False  # ViT: a tanh layer of embed_dim before the head (big_vision rep_size).
  head_zero_init: bool = False  # ViT: the head's kernel starts at 0 (big_vision's default).
  # CLIP: the image tower is the ViT above (its embed_norm is CLIP's pre-LayerNorm, its head
  # unused); the text tower has the vocabulary, max_len and these (0: the image tower's).
  projection_dim: int = 128  # The shared embedding space both towers project into.
  text_embed_dim: int = 0
  text_num_layers: int = 0
  text_num_heads: int = 0
  text_mlp_dim: int = 0
  text_causal: bool = True  # CLIP's text tower is causal; False: bidirectional (BERT-like).
  logit_scale_init: float = 2.6592  # log(1 / 0.07): CLIP's initial temperature (SigLIP: log 10).
  logit_bias_init: float = 0.0  # SigLIP's learned bias starts at -10; softmax ignores it.
  attention_impl: str = "xla"
  attention_window: int = 0  # Keys each query sees before it (and after: bidirectional); 0 = all.
  attention_global_tokens: int = 0  # Longformer: the first n positions see and are seen by all.
  attention_sparse_block: int = 0  # BigBird's block size (0 = off), with its window blocks either
  attention_sparse_window: int = 1  # side, global (first) blocks and random blocks per query
  attention_sparse_global: int = 1  # block, drawn from the seed.
  attention_sparse_random: int = 3
  attention_sparse_seed: int = 0
  attention_block_q: int = 256  # Blockwise attention: query rows per block...
  attention_block_kv: int = 256  # ...and key rows per block.
  scan_layers: bool = False
  remat: str = "none"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    def fail(key: str, why: str):
      raise ValueError(f"config.model.{key}: {why}")

    if self.family not in FAMILIES:
      fail("family", f"{self.family!r} is not one of {FAMILIES}.")
    if self.num_heads <= 0 or (self.embed_dim % self.num_heads and not self.attention_head_dim):
      fail(
        "num_heads",
        f"{self.num_heads} heads do not divide embed_dim={self.embed_dim}; "
        "choose num_heads that divides the width (head_dim = embed_dim / num_heads).",
      )
    if self.kv_heads <= 0 or self.num_heads % self.kv_heads:
      fail(
        "num_kv_heads",
        f"{self.num_kv_heads} key/value heads do not divide num_heads="
        f"{self.num_heads}; use a divisor of num_heads, or 0 for one per query head.",
      )
    if self.positions == "sinusoidal" and self.embed_dim % 2:
      fail("embed_dim", "sinusoidal positions need an even width.")
    if self.positions == "rotary" and self.head_dim % 2:
      fail("positions", f"rotary positions need an even head_dim, got {self.head_dim}.")
    if self.positions == "sincos2d" and (
      self.family not in ("vit", "clip", "dit") or self.embed_dim % 4
    ):
      fail("positions", "'sincos2d' is for images (vit, clip, dit) and needs embed_dim % 4 == 0.")
    if self.family in ("vit", "clip") and self.positions not in ("learned", "sincos2d"):
      fail("positions", f"ViT adds 'learned' or 'sincos2d' positions, not {self.positions!r}.")
    if self.family == "dit" and (self.scan_layers or self.embed_dim % 4):
      fail(
        "scan_layers" if self.scan_layers else "embed_dim",
        "DiT unrolls its blocks (set scan_layers=False) and its sin-cos positions need "
        "embed_dim % 4 == 0.",
      )
    if self.family in ("vit", "clip", "dit") and self.image_size % self.patch_size:
      fail("patch_size", f"{self.patch_size} does not divide image_size={self.image_size}.")
    if self.family == "clip":
      width = self.text_embed_dim or self.embed_dim
      heads = self.text_num_heads or self.num_heads
      if width % heads:
        fail("text_num_heads", f"{heads} heads do not divide the text width {width}.")
    if self.parametrization != "standard" and self.family not in ("decoder", "encoder"):
      fail(
        "parametrization",
        f"muP and CompleteP are built for the decoder and encoder "
        f"families, not {self.family!r}; use parametrization='standard'.",
      )
    if self.parametrization == "completep" and self.norm_position != "pre":
      fail(
        "parametrization", "CompleteP scales pre-norm residual branches; set norm_position='pre'."
      )
    for key in ("base_embed_dim", "base_num_layers"):
      if getattr(self, key) < 0:
        fail(key, f"{getattr(self, key)} must be 0 (the model's own) or positive.")
    for key in ("attention_window", "attention_global_tokens", "attention_sparse_block"):
      if getattr(self, key) < 0:
        fail(key, f"{getattr(self, key)} must be 0 (off) or positive.")
    for key in ("attention_sparse_window", "attention_sparse_global", "attention_sparse_random"):
      if self.attention_sparse_block and getattr(self, key) < 0:
        fail(key, f"{getattr(self, key)} blocks: must be 0 or more.")
    for key, allowed in (
      ("positions", POSITIONS),
      ("norm", NORMS),
      ("activation", ACTIVATIONS),
      ("norm_position", NORM_POSITIONS),
      ("pool", POOLS),
      ("attention_impl", attention.IMPLEMENTATIONS),
      ("remat", REMAT_POLICIES),
      ("parametrization", PARAMETRIZATIONS),
    ):
      if getattr(self, key) not in allowed:
        fail(key, f"{getattr(self, key)!r} is not one of {allowed}.")

  @property
  def head_dim(self) -> int:
    return self.attention_head_dim or self.embed_dim // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def encoder_layers(self) -> int:
    return self.num_encoder_layers or self.num_layers

  def text_tower(self) -> ModelConfig:
    """CLIP's text tower as a model config of its own (learned positions over max_len)."""
    return dataclasses.replace(
      self,
      family="encoder",
      embed_dim=self.text_embed_dim or self.embed_dim,
      num_layers=self.text_num_layers or self.num_layers,
      num_heads=self.text_num_heads or self.num_heads,
      num_kv_heads=0,
      attention_head_dim=0,
      mlp_dim=self.text_mlp_dim or self.mlp_dim,
      positions="learned",
      embed_norm=False,
    )

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(model.keys()) - fields)
    if unknown:
      raise ValueError(f"config.model has unknown keys {unknown}; known keys: {sorted(fields)}.")
    values = dict(model.items())
    values["dtype"] = jnp.dtype(values.get("dtype", "float32"))
    values["param_dtype"] = jnp.dtype(values.get("param_dtype", "float32"))
    return cls(**values)
