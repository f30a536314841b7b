"""Diffusion: schedules and noising against float64 numpy; the samplers against the closed form
of a single-Gaussian data distribution; guidance's arithmetic; DiT against diffusers'
DiTTransformer2DModel on shared random weights.
The training check (guided samples labelled as their class by the ViT digit classifier) is
experiments/dit_digits, whose `ci` variant tests/experiments_test.py runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtrans import diffusion, hf
from jtrans.models import build_model

MEAN, STD = 0.3, 0.2  # The toy data: x_0 ~ N(MEAN, STD^2) in every pixel.


def exact_eps(schedule):
  """The ideal noise predictor of the toy data: (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar)."""
  abar = jnp.asarray(schedule.alphas_cumprod(), jnp.float32)

  def eps(x, t):
    a = abar[t]
    x0 = MEAN + jnp.sqrt(a) * STD**2 / (a * STD**2 + 1 - a) * (x - jnp.sqrt(a) * MEAN)
    return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)

  return eps


@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
def test_schedules_and_noising_equal_float64_numpy(kind):
  schedule = diffusion.make_schedule(kind, 1000)
  betas = np.asarray(schedule.betas)
  if kind == "linear":
    np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02])
  else:
    t = np.arange(1001) / 1000
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    # Up to the last step, whose beta is capped at 0.999 (abar reaches 0 there).
    np.testing.assert_allclose(np.cumprod(1 - betas)[:-1], (f / f[0])[1:-1], rtol=1e-9)
    assert betas[-1] == 0.999
  rng = np.random.default_rng(0)
  x0, noise = rng.normal(size=(3, 4, 4, 1)), rng.normal(size=(3, 4, 4, 1))
  t = np.array([0, 500, 999])
  abar = np.cumprod(1 - betas)[t][:, None, None, None]
  want = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
  got = diffusion.add_noise(
    jnp.asarray(x0, jnp.float32), t, jnp.asarray(noise, jnp.float32), schedule
  )
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [1, 10, 300, 999])
def test_a_ddpm_step_with_the_exact_model_is_the_closed_form_posterior_mean(t):
  """E[x_{t-1} | x_t] of Gaussian data, derived in float64 from the joint law of (x_{t-1},
  x_t) alone (not through x_0): x_{t-1} ~ N(m, v), x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) n."""
  schedule = diffusion.make_schedule("linear", 1000)
  betas = np.asarray(schedule.betas)
  abar = np.cumprod(1 - betas)
  m, v = np.sqrt(abar[t - 1]) * MEAN, abar[t - 1] * STD**2 + 1 - abar[t - 1]
  xt = np.linspace(-2.5, 2.5, 11)
  alpha = 1 - betas[t]
  want = m + np.sqrt(alpha) * v / (alpha * v + betas[t]) * (xt - np.sqrt(alpha) * m)
  mean, variance = diffusion.ddpm_mean_variance(
    exact_eps(schedule), jnp.asarray(xt, jnp.float32), t, schedule, clip=0.0
  )
  np.testing.assert_allclose(np.asarray(mean), want, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(
    float(variance), betas[t] * (1 - abar[t - 1]) / (1 - abar[t]), rtol=1e-5
  )


def ddpm_final_law(schedule):
  """Mean and std of DDPM's final draws with the exact model, in float64: each step is linear,
  x_{t-1} = a_t x_t + b_t + sqrt(variance_t) z, with a_t and b_t those of E[x_{t-1} | x_t]
  (as above). Below STD: the posterior variance is q's given x_0, without the uncertainty
  about x_0 (Ho et al.: the right variance for a point mass, not for spread data)."""
  betas = np.asarray(schedule.betas)
  abar = np.cumprod(1 - betas)
  mean, var = 0.0, 1.0
  for t in range(len(betas) - 1, 0, -1):
    m, v = np.sqrt(abar[t - 1]) * MEAN, abar[t - 1] * STD**2 + 1 - abar[t - 1]
    alpha = 1 - betas[t]
    slope = np.sqrt(alpha) * v / (alpha * v + betas[t])
    mean = m + slope * (mean - np.sqrt(alpha) * m)
    var = slope**2 * var + betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
  gain = np.sqrt(abar[0]) * STD**2 / (abar[0] * STD**2 + 1 - abar[0])  # t = 0: E[x_0 | x_0'].
  return MEAN + gain * (mean - np.sqrt(abar[0]) * MEAN), gain * np.sqrt(var)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_the_samplers_draw_the_toy_distribution(sampler):
  """With the exact model, 4,000 draws from noise over all 1,000 steps: DDIM's deterministic
  flow lands on N(MEAN, STD^2); DDPM on the law its Gaussian steps give, computed in float64.
  (DDIM's discretisation shows with fewer steps: std 0.190 at 50 steps, 0.199 at 200.)"""
  schedule = diffusion.make_schedule("cosine", 1000)
  draws = jax.jit(
    lambda key: diffusion.sample(
      exact_eps(schedule), (4000,), key, schedule, sampler=sampler, clip=0.0
    )
  )(jax.random.key(0))
  draws = np.asarray(draws)
  mean, std = ddpm_final_law(schedule) if sampler == "ddpm" else (MEAN, STD)
  print(f"{sampler}: mean {draws.mean():.4f} (law {mean:.4f}), std {draws.std():.4f} ({std:.4f})")
  assert abs(draws.mean() - mean) < 4 * std / np.sqrt(4000), draws.mean()
  assert abs(draws.std() - std) < 0.025 * std, draws.std()  # 4,000 draws: +-1.1% is 1 sigma.


def test_guidance_mixes_the_conditional_and_null_predictions():
  predict = lambda x, t, y: x * (1.0 + y[:, None]) + t[:, None]  # noqa: E731
  x, labels = jnp.ones((2, 3)), jnp.array([1, 2])
  conditional = predict(x, jnp.full(2, 7), labels)
  null = predict(x, jnp.full(2, 7), jnp.full(2, 10))
  got = diffusion.guided(predict, labels, 10, 3.0)(x, 7)
  np.testing.assert_allclose(np.asarray(got), np.asarray(null + 3.0 * (conditional - null)))
  np.testing.assert_allclose(
    np.asarray(diffusion.guided(predict, labels, 10, 1.0)(x, 7)), conditional
  )


def diffusers_dit(tmp_path, shared=True):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(0)
  model = diffusers.DiTTransformer2DModel(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=3,
    num_layers=2,
    sample_size=8,
    patch_size=2,
    num_embeds_ada_norm=5,
    norm_eps=1e-6,
  )
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():  # Off the zero init, so that every tensor shows in the output.
    for p in model.parameters():
      p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim <= 1 else 0.05))
    if shared:  # DiT's one embedder: every block's copy is block 0's.
      first = model.transformer_blocks[0].norm1.emb.state_dict()
      for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(first)
  model.eval().save_pretrained(tmp_path)
  return torch, model


def test_dit_directory_matches_diffusers(tmp_path):
  torch, model = diffusers_dit(tmp_path)
  cfg, params = hf.load_pretrained(str(tmp_path))
  assert hf.load_config(str(tmp_path)) == cfg and cfg.num_classes == 5
  images = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
  t, labels = np.array([0, 17, 999]), np.array([0, 4, 5])  # 5: the null class.
  want = model(
    torch.tensor(images.transpose(0, 3, 1, 2)),
    timestep=torch.tensor(t),
    class_labels=torch.tensor(labels),
  ).sample
  want = want.detach().numpy().transpose(0, 2, 3, 1)
  got = jax.jit(lambda p: build_model(cfg).apply({"params": p}, images, t, labels))(params)
  diff = np.abs(np.asarray(got) - want).max()
  print(f"DiT: max |ours - diffusers| = {diff:.2e} (outputs up to {np.abs(want).max():.2f})")
  assert diff <= 1e-4


def test_dit_with_per_block_embedders_is_refused(tmp_path):
  diffusers_dit(tmp_path, shared=False)
  with pytest.raises(hf.ConversionError, match="differ from block 0's"):
    hf.load_pretrained(str(tmp_path))


def test_the_sample_grid_places_each_image_in_its_row_and_column():
  """A row per class: image i of `count` in row i // columns, enlarged 4 times, 1-pixel gaps.
  (A DiT run writes it after training, and `--mode=generate --prompt='3|7'` from the trained
  workdir: experiments/dit_digits runs both in tests/experiments_test.py.)"""
  images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1) * np.ones((6, 2, 2, 1), np.uint8)
  picture = diffusion.grid(images, rows=2)
  assert picture.shape == (2 * 9 + 1, 3 * 9 + 1, 1)
  for i in range(6):
    r, c = divmod(i, 3)
    cell = picture[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8]
    assert (cell == i).all()
  assert (picture[0] == 255).all() and (picture[9] == 255).all()  # Gaps are white.


def test_generate_takes_class_ids_and_names_the_range_otherwise():
  from jtrans import modes

  assert modes.class_ids(["3", " 7"], 10) == [3, 7]
  for bad in (["seven"], ["10"], ["-1"]):
    with pytest.raises(ValueError, match=r"each --prompt is a class id in \[0, 10\)"):
      modes.class_ids(bad, 10)
