"""DiT (diffusers' DiTTransformer2DModel, `_class_name` in config.json, weights in
`diffusion_pytorch_model.safetensors`) -> our DiT: the Conv2d patch embedding as a Dense on
`vit.patchify`'s patches, the timestep MLP and class table, adaLN-Zero blocks, the final
adaptive norm and projection.

diffusers keeps a copy of the timestep and class embedders in every block (the first block's
feeds the final layer); DiT has one. They are imported from block 0 and the others must equal
it (converted DiT checkpoints hold identical copies). Its norms take eps 1e-6 except the MLP's
(`norm_eps`); ours take one `norm_epsilon`, 1e-6: a checkpoint with norm_eps 1e-5 differs by
about 1e-6 relative in that norm. Learned-sigma checkpoints (out_channels = 2 x in_channels)
are refused: jtrans's DiT predicts the noise alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jtrans.hf import common
from jtrans.models import ModelConfig

IGNORE = ()
ATTENTION = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
EMBEDDERS = (
  ("norm1.emb.timestep_embedder.linear_1", "time_in"),
  ("norm1.emb.timestep_embedder.linear_2", "time_out"),
)
LABELS = "norm1.emb.class_embedder.embedding_table.weight"


def load(config: dict[str, Any], ckpt: common.Checkpoint) -> tuple[ModelConfig, common.Flat]:
  """DiTTransformer2DModel's config.json and tensors -> our config and flat parameters."""
  directory = ckpt.directory
  heads, head_dim = config.get("num_attention_heads", 16), config.get("attention_head_dim", 72)
  channels = config.get("in_channels", 4)
  common.require(
    config.get("out_channels") in (None, channels),
    directory,
    f"out_channels={config.get('out_channels')} with in_channels={channels}: a learned-sigma "
    "DiT; jtrans's DiT predicts the noise alone (out_channels = in_channels).",
  )
  common.require(
    not config.get("norm_elementwise_affine", False) and config.get("norm_type") == "ada_norm_zero",
    directory,
    "only norm_type='ada_norm_zero' without elementwise affine norms is DiT's.",
  )
  width = heads * head_dim
  b0 = "transformer_blocks.0"
  classes = ckpt.tensors[f"{b0}.{LABELS}"].shape[0] - 1
  cfg = ModelConfig(
    family="dit",
    num_layers=config.get("num_layers", 28),
    num_heads=heads,
    embed_dim=width,
    mlp_dim=ckpt.tensors[f"{b0}.ff.net.0.proj.weight"].shape[0],
    image_size=config.get("sample_size", 32),
    patch_size=config.get("patch_size", 2),
    num_channels=channels,
    num_classes=classes,
    positions="sincos2d",
    norm="layernorm",
    norm_epsilon=1e-6,
    activation=common.activation(
      config.get("activation_fn", "gelu-approximate"), "activation_fn", directory
    ),
    use_bias=bool(config.get("attention_bias", True)),
    dropout_rate=0.0,
  )
  conv = ckpt.take("pos_embed.proj.weight")  # [width, channels, p, p]
  flat = {
    "patch_embed/kernel": conv.transpose(2, 3, 1, 0).reshape(-1, width),
    "patch_embed/bias": ckpt.take("pos_embed.proj.bias"),
  }
  first = {name: common.dense(ckpt, f"{b0}.{name}") for name, _ in EMBEDDERS}
  first[LABELS] = ckpt.take(f"{b0}.{LABELS}")
  for theirs, ours in EMBEDDERS:
    common.put(flat, ours, first[theirs])
  flat["label_embed/embedding"] = first[LABELS]
  for i in range(cfg.num_layers):
    src, dst = f"transformer_blocks.{i}", f"block_{i}"
    if i:  # The copies of the embedders must be the first block's.
      copies = {name: common.dense(ckpt, f"{src}.{name}") for name, _ in EMBEDDERS}
      copies[LABELS] = ckpt.take(f"{src}.{LABELS}")
      same = all(
        np.array_equal(copies[k][p], first[k][p]) for k, _ in EMBEDDERS for p in ("kernel", "bias")
      )
      common.require(
        ckpt.shapes_only or (same and np.array_equal(copies[LABELS], first[LABELS])),
        directory,
        f"block {i}'s timestep/class embedders differ from block 0's; DiT shares one (make "
        "every block's norm1.emb a copy of block 0's).",
      )
    names = tuple(f"{src}.{n}" for n in ATTENTION)
    common.put(flat, f"{dst}/attention", common.attention(ckpt, names, cfg))
    common.put(flat, f"{dst}/modulation", common.dense(ckpt, f"{src}.norm1.linear"))
    common.put(flat, f"{dst}/mlp/wi", common.dense(ckpt, f"{src}.ff.net.0.proj"))
    common.put(flat, f"{dst}/mlp/wo", common.dense(ckpt, f"{src}.ff.net.2"))
  common.put(flat, "final_modulation", common.dense(ckpt, "proj_out_1"))
  common.put(flat, "out", common.dense(ckpt, "proj_out_2"))
  return cfg, flat
