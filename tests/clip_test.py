"""CLIP: a Hugging Face CLIPModel directory (weights and its own CLIP tokenizer) imported gives
CLIPModel's embeddings and logits; the contrastive losses equal float64 numpy; over a data=8
mesh the loss pairs every image with the whole global batch's texts. (Training steps of any
objective on any mesh equal one device's: tests/sharding_test.py.) The zero-shot training
check is experiments/clip_digits (its `ci` variant runs in tests/experiments_test.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses  # noqa: E402
import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jtrans import hf, losses, parts, sharding, steps  # noqa: E402
from jtrans.data import hf_tokenizer, images  # noqa: E402
from jtrans.models import ModelConfig, build_model  # noqa: E402

CAPTIONS = ["A photo of the Digit seven", "the digit", "handwritten 7 of the seven"]


def clip_tokenizer(transformers):
  """A CLIP tokenizer as transformers builds one (byte-level BPE with `</w>` word ends,
  lower-casing, <|startoftext|> ... <|endoftext|>), on a tiny vocabulary: 256 byte symbols,
  their word-final forms, a few merges and the two specials (the last ids)."""
  from transformers.convert_slow_tokenizer import bytes_to_unicode

  symbols = list(bytes_to_unicode().values())
  merges = [("t", "h"), ("th", "e</w>"), ("d", "i"), ("g", "i"), ("di", "gi"), ("digi", "t</w>")]
  vocab = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  return transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def numpy_contrastive(img, txt, log_scale, bias, weights, kind):
  """float64 reference: CLIP's symmetric InfoNCE or SigLIP's sigmoid loss, summed over rows."""
  img, txt = img.astype(np.float64), txt.astype(np.float64)
  keep = weights > 0
  img, txt, w = img[keep], txt[keep], weights[keep].astype(np.float64)
  logits = np.exp(min(log_scale, np.log(100))) * img @ txt.T + bias
  n = len(img)
  if kind == "softmax":

    def ce(z):
      z = z - z.max(axis=1, keepdims=True)
      return -(np.diag(z) - np.log(np.exp(z).sum(axis=1)))

    per_row = 0.5 * (ce(logits) + ce(logits.T))
  else:
    labels = 2 * np.eye(n) - 1
    per_row = np.log1p(np.exp(-labels * logits)).sum(axis=1)
  return float((per_row * w).sum())


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_contrastive_losses_equal_float64_numpy(kind):
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  img, txt = unit(rng.normal(size=(6, 5))), unit(rng.normal(size=(6, 5)))
  weights = np.array([1, 1, 0, 1, 1, 1], np.float32)  # Row 2 is padding: no pair, no negative.
  log_scale, bias = (2.3, -4.0) if kind == "sigmoid" else (2.66, 0.0)
  sums = lambda: losses.contrastive(  # noqa: E731
    *(jnp.asarray(x, jnp.float32) for x in (img, txt, log_scale, bias, weights)), kind=kind
  )
  want = numpy_contrastive(img, txt, log_scale, bias, weights, kind)
  np.testing.assert_allclose(float(sums()["loss"]), want, rtol=1e-5)
  assert float(sums()["denominator"]) == 5
  img[2], txt[2] = img[0], txt[0]  # The padded row's values do not matter.
  np.testing.assert_allclose(float(sums()["loss"]), want, rtol=1e-5)


def test_clip_directory_matches_hugging_face(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tokenizer = clip_tokenizer(transformers)
  config = transformers.CLIPConfig(
    text_config=dict(
      vocab_size=len(tokenizer),
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=2,
      num_attention_heads=4,
      max_position_embeddings=16,
      bos_token_id=tokenizer.bos_token_id,
      eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizer.pad_token_id,
    ),
    vision_config=dict(
      hidden_size=48,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      image_size=16,
      patch_size=4,
    ),
    projection_dim=24,
  )
  torch.manual_seed(0)
  model = transformers.CLIPModel(config)
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():  # Off the init (norm scales off 1, biases off 0): a swap would show.
    for p in model.parameters():
      p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim <= 1 else 0.02))
  model = model.float().eval()
  model.save_pretrained(tmp_path)
  tokenizer.save_pretrained(tmp_path)

  cfg, params = hf.load_pretrained(str(tmp_path))
  assert hf.load_config(str(tmp_path)) == cfg
  assert cfg.activation == "quick_gelu"  # CLIP's default hidden_act.

  # The captions as our pipeline tokenizes them with the directory's tokenizer
  # (data.tokenizer="hf"): the ids and mask CLIPTokenizer gives, BOS and EOS included (the
  # last caption is cut to 16 tokens, its EOS kept).
  ours_tok = hf_tokenizer.HfTokenizer(str(tmp_path))
  rows = [images.caption_ids(ours_tok, c, 16) for c in CAPTIONS]
  ids, mask = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)(
    CAPTIONS, padding="max_length", truncation=True, max_length=16
  )
  np.testing.assert_array_equal(ids, np.array(theirs["input_ids"]))
  np.testing.assert_array_equal(mask, np.array(theirs["attention_mask"]))

  pixels = np.random.default_rng(3).normal(size=(3, 16, 16, 3)).astype(np.float32)
  out = model(
    input_ids=torch.tensor(ids, dtype=torch.long),
    attention_mask=torch.tensor(mask),
    pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
  )
  clip = build_model(cfg)
  image_embeds, text_embeds, log_scale, bias = jax.jit(
    lambda p: clip.apply({"params": p}, pixels, ids, mask)
  )(params)
  logits = np.exp(float(log_scale)) * np.asarray(image_embeds) @ np.asarray(text_embeds).T
  logits += float(bias)
  for name, got, want in (
    ("image_embeds", image_embeds, out.image_embeds),
    ("text_embeds", text_embeds, out.text_embeds),
    ("logits_per_image", logits, out.logits_per_image),
  ):
    diff = np.abs(np.asarray(got) - want.detach().numpy()).max()
    print(f"{name}: max |ours - HF| = {diff:.2e}")
    assert diff <= 1e-4, name


def contrastive_config(**changes):
  from experiments.clip_digits import config as recipe

  c = recipe.get_config("ci")
  c.model.num_layers, c.model.text_num_layers, c.model.embed_dim, c.model.mlp_dim = 1, 1, 32, 64
  c.model.projection_dim, c.train.batch_size, c.train.steps = 16, 16, 10
  c.optim.warmup_steps, c.optim.eps = 1, 1e-6
  for key, value in changes.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def contrastive_batch(c):
  rng = np.random.default_rng(0)
  rows, length = c.train.batch_size, c.data.seq_len
  lengths = rng.integers(4, length, rows)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  return {
    "images": rng.normal(size=(rows, 8, 8, 1)).astype(np.float32),
    "texts": (rng.integers(3, 259, (rows, length)) * mask).astype(np.int32),
    "text_mask": mask,
    "targets": rng.integers(0, 10, rows).astype(np.int32),
    "weights": np.ones(rows, np.float32),
  }


def test_the_contrastive_loss_on_a_data_mesh_uses_every_shards_negatives():
  """The eval step's loss with the batch split over data=8 equals the unsharded loss, and is
  not the per-shard one (each shard's 2 images scored against its own 2 texts only: ln 2
  instead of ln 16 at the start), which a loss without the global batch would give."""
  c = contrastive_config()
  batch = contrastive_batch(c)
  model = build_model(c.model)
  params = jax.jit(model.init)(jax.random.key(0), batch["images"][:1], batch["texts"][:1])
  params = params["params"]
  settings = steps.StepSettings.from_config(c)
  found = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(c.mesh, jax.devices()[:n])
    evaluate = jax.jit(
      functools.partial(steps.eval_step, model=model, settings=settings, mesh=mesh),
      in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
    )
    with jax.set_mesh(mesh):
      found[n] = float(evaluate(params, sharding.global_batch(batch, mesh))["loss"])
  outs = jax.jit(model.apply)(
    {"params": params}, *(batch[k] for k in ("images", "texts", "text_mask"))
  )
  shards = [
    float(losses.contrastive(outs[0][i : i + 2], outs[1][i : i + 2], *outs[2:])["loss"])
    for i in range(0, 16, 2)
  ]
  np.testing.assert_allclose(found[8], found[1], rtol=1e-6)
  np.testing.assert_allclose(found[1], float(losses.contrastive(*outs)["loss"]), rtol=1e-5)
  assert abs(sum(shards) - found[8]) / 16 > 0.5


@pytest.mark.parametrize(
  "changes, named",
  [
    ({"train.engine": "pmap"}, "config.train.engine='jit'"),
    ({"train.grad_accum_steps": 2}, "config.train.grad_accum_steps=1"),
  ],
)
def test_contrastive_runs_refuse_what_would_drop_negatives(changes, named):
  c = contrastive_config(**changes)
  with pytest.raises(ValueError, match=named.replace("(", r"\(")):
    parts.validate(c, sharding.make_mesh(c.mesh, jax.devices()[:1]))


def test_text_tower_heads_must_divide_its_width():
  with pytest.raises(ValueError, match="config.model.text_num_heads"):
    ModelConfig(family="clip", embed_dim=32, num_heads=4, text_embed_dim=30)


def test_a_bidirectional_text_tower_ignores_padding_and_pools_the_last_real_token():
  """text_causal=False: every real token sees every other, padding none; the caption's
  embedding is its last real token's, whatever the padding holds."""
  cfg = ModelConfig(
    family="clip", num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, image_size=8,
    patch_size=2, num_channels=1, embed_norm=True, projection_dim=16, max_len=12,
    text_causal=False,
  )  # fmt: skip
  model = build_model(cfg)
  params = jax.jit(model.init)(
    jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 12), jnp.int32)
  )
  encode = jax.jit(lambda p, t, m: model.apply(p, t, m, method="encode_text"))
  mask = (np.arange(12) < 7).astype(np.int32)[None]
  texts = np.random.default_rng(0).integers(3, 259, (1, 12)).astype(np.int32)
  other_padding = texts.copy()
  other_padding[0, 7:] = 5
  first_changed = texts.copy()
  first_changed[0, 0] = 9  # A real token: seen by the pooled one.
  base = np.asarray(encode(params, texts, mask))
  np.testing.assert_allclose(np.asarray(encode(params, other_padding, mask)), base, atol=1e-6)
  assert np.abs(np.asarray(encode(params, first_changed, mask)) - base).max() > 1e-4
  # The same weights with a causal mask: earlier tokens no longer see later ones, which the
  # last token reads from them in the second block.
  causal = build_model(dataclasses.replace(cfg, text_causal=True))
  causal_out = jax.jit(lambda p: causal.apply(p, texts, mask, method="encode_text"))(params)
  assert np.abs(np.asarray(causal_out) - base).max() > 1e-4
