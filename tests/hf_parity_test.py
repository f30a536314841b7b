"""jtrans.hf against transformers: tiny randomly initialised HF models, saved and imported,
give the same logits as ours; our GPT-2 and Llama exported load in HF and agree; bad
directories fail clearly. Nothing is downloaded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jtrans import hf, positional  # noqa: E402
from jtrans.models import ModelConfig, build_model  # noqa: E402

transformers.logging.set_verbosity_error()
TOLERANCE = 1e-4
VOCAB = 100


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  """Every trainable tensor moved off its init (norm scales off 1, biases off 0), so that a
  swapped or dropped tensor shows in the logits; eval mode, float32."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad:  # Not Marian's frozen sinusoidal table.
        p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim == 1 else 0.02))
  return model.float().eval()


def import_saved(model: torch.nn.Module, tmp_path, **save_kwargs):
  """The saved model imported; the architecture read without the weights (what
  configs/hf.py does) must be the one the full import finds."""
  model.save_pretrained(tmp_path, safe_serialization=True, **save_kwargs)
  cfg, params = hf.load_pretrained(str(tmp_path))
  assert hf.load_config(str(tmp_path)) == cfg
  return cfg, params


def ours(cfg: ModelConfig, params, *args, **kwargs) -> np.ndarray:
  """Our logits, compiled without XLA's backend optimisations (a third of the compile time)."""
  model = build_model(cfg)
  apply = jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kwargs))
  compiled = apply.lower(params, *args).compile({"xla_backend_optimization_level": 0})
  return np.asarray(compiled(params, *args))


def assert_close(name: str, got: np.ndarray, want: torch.Tensor):
  want = want.detach().numpy()
  assert got.shape == want.shape
  diff = float(np.abs(got - want).max())
  print(f"{name}: max |ours - HF| = {diff:.2e}")
  assert diff <= TOLERANCE, f"{name}: {diff}"


def tokens(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def test_gpt2_sharded(tmp_path):
  model = perturbed(
    transformers.GPT2LMHeadModel(
      transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=24,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
      )
    )
  )
  cfg, params = import_saved(model, tmp_path, max_shard_size="40KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  assert cfg.max_len == 24 and cfg.activation == "gelu" and cfg.tie_embeddings
  x = tokens((2, 10))
  assert_close("gpt2", ours(cfg, params, x), model(torch.tensor(x)).logits)


def test_llama_grouped_query(tmp_path):
  model = perturbed(
    transformers.LlamaForCausalLM(
      transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        rope_theta=500.0,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
      )
    )
  )
  cfg, params = import_saved(model, tmp_path)
  assert (cfg.kv_heads, cfg.head_dim, cfg.rope_theta, cfg.tie_embeddings) == (2, 16, 500.0, False)
  x = tokens((2, 12))
  assert_close("llama", ours(cfg, params, x), model(torch.tensor(x)).logits)


def test_bert_token_types_and_padding(tmp_path):
  model = perturbed(
    transformers.BertForMaskedLM(
      transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        type_vocab_size=2,
      )
    )
  )
  cfg, params = import_saved(model, tmp_path)
  x, types = tokens((2, 10)), tokens((2, 10), seed=2) % 2
  mask = np.ones((2, 10), np.int32)
  mask[1, 6:] = 0
  want = model(
    torch.tensor(x), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
  ).logits
  got = ours(cfg, params, x, token_types=types, segment_ids=mask)
  real = mask.astype(bool)  # HF lets padding positions attend; only real tokens are compared.
  assert_close("bert", got[real], want[torch.tensor(real)])


def test_marian_with_encoder_padding(tmp_path):
  pad = VOCAB - 1
  model = perturbed(
    transformers.MarianMTModel(
      transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
      )
    )
  )
  with torch.no_grad():  # A buffer, so `perturbed` left it at zero.
    model.final_logits_bias.normal_(0, 0.1)
  table = model.model.encoder.embed_positions.weight.detach().numpy()
  ours_table = positional.sinusoidal(np.arange(64)[None], 32)[0]
  np.testing.assert_allclose(ours_table, table, atol=1e-5)  # float32 angles vs HF's float64.
  cfg, params = import_saved(model, tmp_path)
  assert cfg.activation == "silu" and cfg.scale_embeddings and cfg.output_bias
  source, target = tokens((2, 9)), tokens((2, 7), seed=2)
  target[:, 0] = pad  # Marian starts decoding from the pad token.
  mask = np.ones((2, 9), np.int32)
  mask[0, 5:] = 0
  want = model(
    input_ids=torch.tensor(source),
    attention_mask=torch.tensor(mask),
    decoder_input_ids=torch.tensor(target),
  ).logits
  assert_close("marian", ours(cfg, params, source, target, encoder_mask=mask), want)


@pytest.mark.parametrize("proj,tied", [("relu", True), ("gated-gelu", False)])
def test_t5(tmp_path, proj, tied):
  model = transformers.T5ForConditionalGeneration(
    transformers.T5Config(
      vocab_size=VOCAB,
      d_model=32,
      d_kv=6,
      d_ff=48,
      num_layers=2,
      num_heads=4,
      relative_attention_num_buckets=8,
      relative_attention_max_distance=12,
      feed_forward_proj=proj,
      tie_word_embeddings=tied,
    )
  )
  if not tied:  # transformers 5 ties lm_head in a fresh model; T5 v1.1 checkpoints do not.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 0.5)
  perturbed(model)
  cfg, params = import_saved(model, tmp_path)
  assert cfg.tie_embeddings == tied and cfg.head_dim == 6 and cfg.relative_buckets == 8
  assert cfg.logits_scale == (32**-0.5 if tied else 1.0)
  source, target = tokens((2, 16)), tokens((2, 15), seed=2)  # Past max_distance: log buckets too.
  mask = np.ones((2, 16), np.int32)
  mask[1, 10:] = 0
  want = model(
    input_ids=torch.tensor(source),
    attention_mask=torch.tensor(mask),
    decoder_input_ids=torch.tensor(target),
  ).logits
  assert_close(f"t5 {proj}", ours(cfg, params, source, target, encoder_mask=mask), want)


def test_vit(tmp_path):
  model = perturbed(
    transformers.ViTForImageClassification(
      transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
      )
    )
  )
  cfg, params = import_saved(model, tmp_path)
  images = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32)  # NHWC.
  want = model(pixel_values=torch.tensor(images.transpose(0, 3, 1, 2))).logits
  assert_close("vit", ours(cfg, params, images), want)

  # From uint8 pixels: the directory's image processor (its own mean and std) then the model,
  # against our pipeline configured from the same directory by configs/hf.py.
  from configs import hf as hf_config
  from jtrans.data.images import ImageOptions, make_image_dataset

  transformers.ViTImageProcessor(
    size={"height": 16, "width": 16}, image_mean=[0.2, 0.4, 0.6], image_std=[0.3, 0.2, 0.1]
  ).save_pretrained(tmp_path)
  config = hf_config.get_config(str(tmp_path))
  assert tuple(config.data.image_mean) == (0.2, 0.4, 0.6)
  pixels = np.random.default_rng(4).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
  want = model(**processor(list(pixels), return_tensors="pt")).logits
  (batch,) = make_image_dataset(
    source=[{"image": p, "label": 0} for p in pixels],
    image_key="image",
    label_key="label",
    options=ImageOptions.from_config(config),
    batch_size=2,
    seed=0,
    train=False,
  )
  assert_close("vit from pixels", ours(cfg, params, batch["images"]), want)


def test_bfloat16_base_model_without_prefix(tmp_path):
  """The hub's gpt2 layout: a GPT2Model (no "transformer." prefix, no lm_head), here bfloat16."""
  model = transformers.GPT2Model(
    transformers.GPT2Config(
      vocab_size=VOCAB,
      n_positions=16,
      n_embd=32,
      n_layer=1,
      n_head=4,
      bos_token_id=0,
      eos_token_id=0,
    )
  ).to(torch.bfloat16)
  _, params = import_saved(model, tmp_path)
  np.testing.assert_array_equal(
    params["embed"]["token_embed"]["embedding"], model.wte.weight.float().detach().numpy()
  )


def random_params(cfg: ModelConfig, seed: int = 0):
  """The tree of `build_model(cfg).init` (traced for its shapes: compiling the random init takes
  seconds), filled from numpy with no leaf at its init value (norm scales near 1, not 1)."""
  rng = np.random.default_rng(seed)
  flat = {
    path: rng.normal(0, 0.05, shape).astype(np.float32) + np.float32(path.endswith("scale"))
    for path, shape in hf.common.expected_shapes(cfg).items()
  }
  return hf.common.nest(flat)


EXPORTS = {
  "gpt2": (
    transformers.GPT2LMHeadModel,
    ModelConfig(vocab_size=VOCAB, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=16),
  ),
  "llama": (
    transformers.LlamaForCausalLM,
    ModelConfig(
      vocab_size=VOCAB,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      embed_dim=32,
      mlp_dim=48,
      max_len=32,
      positions="rotary",
      rope_theta=500.0,
      norm="rmsnorm",
      gated_mlp=True,
      activation="silu",
      use_bias=False,
      tie_embeddings=False,
    ),
  ),
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_round_trip(tmp_path, name):
  hf_class, cfg = EXPORTS[name]
  params = random_params(cfg)
  hf.save_pretrained(str(tmp_path), cfg, params)
  assert json.loads((tmp_path / "config.json").read_text())["model_type"] == name
  model, info = hf_class.from_pretrained(str(tmp_path), output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
  x = tokens((2, 12))
  assert_close(f"export {name}", ours(cfg, params, x), model.eval()(torch.tensor(x)).logits)
  cfg_back, params_back = hf.load_pretrained(str(tmp_path))
  assert cfg_back == cfg
  jax.tree.map(np.testing.assert_array_equal, params_back, params)


def test_unknown_model_type(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
  with pytest.raises(hf.ConversionError, match=r"model_type='mamba'.*gpt2 \(GPT2LMHeadModel\)"):
    hf.load_pretrained(str(tmp_path))


def test_missing_files(tmp_path):
  with pytest.raises(hf.ConversionError, match="no config.json"):
    hf.load_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(hf.ConversionError, match="model.safetensors"):
    hf.load_pretrained(str(tmp_path))


def test_wrong_tensors_are_named(tmp_path):
  cfg = EXPORTS["gpt2"][1]
  hf.save_pretrained(str(tmp_path), cfg, random_params(cfg))
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 1}))
  with pytest.raises(hf.ConversionError, match=r"unexpected tensors \['transformer\.h\.1\."):
    hf.load_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
  with pytest.raises(hf.ConversionError, match="'transformer.h.2.attn.c_attn.weight' is missing"):
    hf.load_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({**config, "n_positions": 8}))
  with pytest.raises(hf.ConversionError, match=r"wrong shapes.*position_embed"):
    hf.load_pretrained(str(tmp_path))


def test_export_refuses_other_shapes(tmp_path):
  cfg = ModelConfig(family="encoder_decoder", positions="relative", norm="rmsnorm")
  with pytest.raises(hf.ConversionError, match="neither GPT-2 shaped"):
    hf.save_pretrained(str(tmp_path), cfg, {})


def test_the_architecture_is_read_without_the_weights(tmp_path):
  """load_config reads config.json and the safetensors header only: with every weight byte cut
  off the file it still answers, while the import names the damage."""
  model = transformers.LlamaForCausalLM(
    transformers.LlamaConfig(
      vocab_size=VOCAB,
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      tie_word_embeddings=False,
    )
  )
  cfg, _ = import_saved(model, tmp_path)
  path = tmp_path / "model.safetensors"
  header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
  os.truncate(path, header)
  assert hf.load_config(str(tmp_path)) == cfg and not cfg.tie_embeddings
  with pytest.raises(hf.ConversionError, match="model.safetensors: tensor .* is cut short"):
    hf.load_pretrained(str(tmp_path))
