"""CLIP: a Hugging Face CLIPModel directory (weights and its own CLIP tokenizer) imported gives
CLIPModel's embeddings and logits; the contrastive losses equal float64 numpy; over a data=8
mesh the loss pairs every image with the whole global batch's texts. The zero-shot training
check is experiments/clip_digits (its `ci` variant runs in tests/experiments_test.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jtrans import hf, losses, optim, parts, sharding, steps  # noqa: E402
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
  got = losses.contrastive(
    jnp.asarray(img, jnp.float32),
    jnp.asarray(txt, jnp.float32),
    jnp.float32(log_scale),
    jnp.float32(bias),
    jnp.asarray(weights),
    kind=kind,
  )
  want = numpy_contrastive(img, txt, log_scale, bias, weights, kind)
  np.testing.assert_allclose(float(got["loss"]), want, rtol=1e-5)
  assert float(got["denominator"]) == 5
  # The padded row's values do not matter.
  img[2], txt[2] = img[0], txt[0]
  again = losses.contrastive(
    jnp.asarray(img, jnp.float32),
    jnp.asarray(txt, jnp.float32),
    jnp.float32(log_scale),
    jnp.float32(bias),
    jnp.asarray(weights),
    kind=kind,
  )
  np.testing.assert_allclose(float(again["loss"]), want, rtol=1e-5)


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


def test_contrastive_step_on_a_data_mesh_uses_every_shards_negatives():
  """Two steps on data=8 equal one device's; and the loss is not the per-shard one (each
  shard's images scored against its own 2 texts only), which would differ."""
  results = {}
  c = contrastive_config()
  batch = contrastive_batch(c)
  model = build_model(c.model)
  tx = optim.make_optimizer(c.optim, c.train.steps)
  for n in (1, 8):
    c = contrastive_config(**{"mesh.data": n})
    mesh = sharding.make_mesh(c.mesh, jax.devices()[:n])
    state, shardings, _ = parts.init_state(model, tx, c, mesh)
    initial = jax.device_get(state.params)
    engine = steps.make_engine(model, tx, c, mesh, shardings)
    found = []
    with engine.context():
      for _ in range(2):
        state, metrics = engine.train_step(state, engine.place_batch(batch))
        found.append(float(metrics["loss"]))
    results[n] = (np.array(found), jax.device_get(state.params))
  np.testing.assert_allclose(results[8][0], results[1][0], rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
    results[8][1],
    results[1][1],
  )
  outs = jax.jit(model.apply)(
    {"params": initial}, *(batch[k] for k in ("images", "texts", "text_mask"))
  )
  whole = float(losses.contrastive(*outs)["loss"]) / 16
  shards = [
    float(losses.contrastive(outs[0][i : i + 2], outs[1][i : i + 2], *outs[2:])["loss"])
    for i in range(0, 16, 2)
  ]
  np.testing.assert_allclose(whole, results[8][0][0], rtol=1e-5)
  assert abs(sum(shards) / 16 - whole) > 0.5  # ln 16 vs ln 2 at the start: far apart.


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
