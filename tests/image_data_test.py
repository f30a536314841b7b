"""Tests of the image classification pipeline: values against the records and against Hugging
Face's image processors, Inception crops, resumption, shards."""

from __future__ import annotations

import json
import threading

import jax
import numpy as np
import pytest

from configs import lm
from jtrans import parts
from jtrans.data import images as image_lib
from jtrans.data import synthetic_images
from jtrans.data.images import ImageOptions, make_image_dataset

RNG = np.random.default_rng(0)
RECORDS = [
  {"image": RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": i % 7, "id": i}
  for i in range(11)
]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def images(records=RECORDS, **kwargs):
  args = dict(
    source=records,
    image_key="image",
    label_key="label",
    batch_size=4,
    seed=0,
    train=True,
    options=ImageOptions(size=4),
  )
  return make_image_dataset(**{**args, **kwargs})


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def record_of(image: np.ndarray) -> int:
  """Index of the record whose scaled image this is."""
  scaled = [r["image"].astype(np.float64) / 127.5 - 1 for r in RECORDS]
  (i,) = [i for i, s in enumerate(scaled) if np.allclose(s, image, atol=1e-6)]
  return i


def test_eval_batches_equal_the_records():
  batches = list(images(train=False))
  assert len(batches) == 3
  for b in batches:
    assert b["images"].shape == (4, 4, 4, 3) and b["images"].dtype == np.float32
    assert b["targets"].shape == b["weights"].shape == (4,)
    assert b["targets"].dtype == np.int32 and b["weights"].dtype == np.float32
  got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  want = np.stack([r["image"] for r in RECORDS]).astype(np.float64) / 255 * 2 - 1
  np.testing.assert_allclose(got["images"][:11], want, atol=1e-6)
  assert got["images"][:11].min() >= -1 and got["images"][:11].max() <= 1
  assert got["images"][:11].min() == -1 and got["images"][:11].max() == 1  # 0 and 255 occur.
  np.testing.assert_array_equal(got["targets"][:11], [r["label"] for r in RECORDS])
  np.testing.assert_array_equal(got["weights"], [1.0] * 11 + [0.0])
  np.testing.assert_array_equal(got["images"][11], 0)


def test_train_epochs_are_seeded_permutations():
  order = [record_of(x) for b in take(iter(images(batch_size=11)), 3) for x in b["images"]]
  for epoch in range(3):
    assert sorted(order[11 * epoch : 11 * epoch + 11]) == list(range(11))
  assert order[:11] != order[11:22]
  again = [record_of(x) for b in take(iter(images(batch_size=11)), 3) for x in b["images"]]
  assert again == order


@pytest.mark.parametrize("augment", ["none", "inception_crop_flip"])
@pytest.mark.parametrize("start", [1, 2, 3])  # Batch 2 straddles epochs 0 and 1.
def test_resume_after_a_json_round_trip(start, augment):
  options = ImageOptions(size=4, augment=augment)
  reference = take(iter(images(options=options)), start + 4)
  it = iter(images(options=options))
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))
  take(it, 2)
  fresh = iter(images(options=options))
  fresh.set_state(state)
  assert_same(take(fresh, 4), reference[start:])  # The same crops and flips, too.


def test_shards_are_disjoint_and_cover():
  seen = []
  for shard in range(2):
    batches = list(images(train=False, batch_size=2, shard_index=shard, shard_count=2))
    assert len(batches) == 3  # ceil(ceil(11 / 2) / 2) on both shards.
    seen += [record_of(x) for b in batches for x, w in zip(b["images"], b["weights"]) if w]
    own = {
      record_of(x)
      for b in take(iter(images(shard_index=shard, shard_count=2)), 4)
      for x in b["images"]
    }
    assert own == set(range(shard, 11, 2))
  assert sorted(seen) == list(range(11))


def test_make_dataset_dispatches_classification(tmp_path):
  c = lm.get_config("tiny")
  c.loss.objective = "classification"
  c.data.update({"name": "synthetic_images", "data_dir": str(tmp_path)})
  c.train.batch_size = 8 * jax.process_count()
  with pytest.MonkeyPatch.context() as mp:  # A small build; the real one has 11,000 images.
    mp.setattr(
      synthetic_images.SyntheticImages, "SPLITS", {"train": (40, 1), "validation": (20, 2)}
    )
    batches = list(parts.make_dataset(c, train=False))
  assert len(batches) == 3 and batches[0]["images"].shape == (8, 32, 32, 3)
  labels = np.concatenate([b["targets"] for b in batches])[:20]
  want = np.random.default_rng([2, 0]).permutation(np.arange(20) % 10)  # The builder's labels.
  np.testing.assert_array_equal(labels, want)
  pixels = np.concatenate([b["images"] for b in batches])[:20]
  np.testing.assert_allclose(pixels, synthetic_images.draw(want, 2) / 127.5 - 1, atol=1e-6)


def jpeg_records(shapes, seed=0):
  """Records of decoded JPEGs of the given (height, width), as TFDS hands imagenet2012's."""
  import io

  from PIL import Image

  from tests.tfds_mock import jpeg

  rng = np.random.default_rng(seed)
  return [
    {"image": np.asarray(Image.open(io.BytesIO(jpeg(h, w, rng)))), "label": i}
    for i, (h, w) in enumerate(shapes)
  ]


def test_eval_view_equals_hugging_faces_imagenet_preprocessing():
  """Resize the shorter side to 32 / 0.875 = 36, cut the centre 32, normalise with ImageNet's
  mean and std: what transformers' ConvNextImageProcessor (crop_pct 0.875, bilinear) gives."""
  import transformers

  shapes = [(50, 70), (70, 50), (37, 37), (32, 90), (100, 33), (36, 36), (32, 32), (20, 28)]
  records = jpeg_records(shapes)
  processor = transformers.ConvNextImageProcessor(
    size={"shortest_edge": 32},
    crop_pct=0.875,
    resample=2,
    image_mean=list(IMAGENET["mean"]),
    image_std=list(IMAGENET["std"]),
  )
  want = np.stack([processor(r["image"], return_tensors="np")["pixel_values"][0] for r in records])
  options = ImageOptions(size=32, crop_fraction=0.875, **IMAGENET)
  (got,) = list(images(records, train=False, batch_size=len(records), options=options))
  np.testing.assert_allclose(got["images"], want.transpose(0, 2, 3, 1), atol=2e-6)
  # Training without augmentation takes the same centre views.
  train_batch = next(iter(images(records, batch_size=len(records), options=options)))
  order = [int(t) for t in train_batch["targets"]]
  np.testing.assert_allclose(train_batch["images"], got["images"][order], atol=1e-6)


def test_inception_crops_draw_from_the_published_ranges(monkeypatch):
  """Crops of 8% to 100% of the area with aspect ratio 3/4 to 4/3 (Szegedy et al. 2015), all
  over the image, each resized to the square; the pipeline flips half of them."""
  crops, real_resize = [], image_lib.resize

  def recording_resize(x, h, w):  # Only this thread's: other tests' prefetch threads may linger.
    if threading.current_thread() is threading.main_thread():
      crops.append(x)
    return real_resize(x, h, w)

  monkeypatch.setattr(image_lib, "resize", recording_resize)
  height, width = 60, 80
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  image = np.stack([rows, cols, rows], -1).astype(np.uint8)  # Each pixel holds its position.
  rng = np.random.default_rng(0)
  for _ in range(2000):
    assert image_lib.inception_crop(image, 16, rng).shape == (16, 16, 3)
  area = np.array([c.shape[0] * c.shape[1] for c in crops]) / (height * width)
  aspect = np.array([c.shape[1] / c.shape[0] for c in crops])
  assert area.min() >= 0.07 and area.max() <= 1.0
  assert aspect.min() >= 3 / 4 - 0.06 and aspect.max() <= 4 / 3 + 0.06
  # The reference: area and log aspect uniform on [0.08, 1] x [log 3/4, log 4/3], kept where the
  # crop fits the image (area * aspect <= width / height, area / aspect <= height / width).
  a, log_r = np.meshgrid(
    np.linspace(0.08, 1, 1000), np.linspace(np.log(3 / 4), np.log(4 / 3), 1000), indexing="ij"
  )
  fits = (a * np.exp(log_r) <= width / height) & (a / np.exp(log_r) <= height / width)
  cdf = np.cumsum(fits.sum(1)) / fits.sum()
  want = [a[np.searchsorted(cdf, q), 0] for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
  np.testing.assert_allclose(np.quantile(area, [0.1, 0.25, 0.5, 0.75, 0.9]), want, atol=0.03)
  tops, lefts = [int(c[0, 0, 0]) for c in crops], [int(c[0, 0, 1]) for c in crops]
  bottoms, rights = [int(c[-1, -1, 0]) for c in crops], [int(c[-1, -1, 1]) for c in crops]
  assert min(tops) == 0 and max(bottoms) == height - 1
  assert min(lefts) == 0 and max(rights) == width - 1

  records = [{"image": image, "label": 0}] * 64
  options = ImageOptions(size=16, augment="inception_crop_flip", mean=(0.0,) * 3, std=(1.0,) * 3)
  (batch,) = take(iter(images(records, batch_size=64, options=options)), 1)
  columns = batch["images"][:, 8, :, 1]  # Pixel columns along a row: rising unless flipped.
  flipped = np.mean(columns[:, 0] > columns[:, -1])
  assert 0.3 < flipped < 0.7, flipped


def test_digits_are_scikit_learns_images_in_a_fixed_stratified_split(tmp_path):
  """The `digits` builder: scikit-learn's bundled 8x8 images (scaled 0..16 -> 0..255), 80% of
  each digit for train and the rest for test (validation = test), the same split every time."""
  from sklearn.datasets import load_digits

  from jtrans.data import sources

  reference = load_digits()
  train = sources.load_source("digits", "train", str(tmp_path))
  test = sources.load_source("digits", "test", str(tmp_path))
  assert (len(train), len(test)) == (1438, 359)
  assert not {int(r["index"]) for r in train} & {int(r["index"]) for r in test}
  for split in (train, test):
    for record in (split[0], split[len(split) // 2], split[-1]):
      i = int(record["index"])
      assert record["label"] == reference.target[i] and record["image"].shape == (8, 8, 1)
      np.testing.assert_array_equal(
        record["image"][..., 0], np.round(reference.images[i] * 255 / 16).astype(np.uint8)
      )
  counts = np.bincount([int(r["label"]) for r in test], minlength=10)
  np.testing.assert_array_equal(
    counts, np.bincount(reference.target) - np.round(0.8 * np.bincount(reference.target))
  )
  validation = sources.load_source("digits", "validation", str(tmp_path))
  assert [int(r["index"]) for r in validation] == [int(r["index"]) for r in test]


def test_training_crops_are_not_cropped_again_for_evaluation():
  """An Inception crop is the model's square already: with ImageNet's crop_fraction 0.875 it
  must not be resized to 256 and centre-cut again (the old pipeline zoomed every training crop
  by 1 / 0.875). A square image whose only allowed crop is itself comes through unchanged."""
  rng = np.random.default_rng(1)
  square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  options = ImageOptions(
    size=16,
    augment="inception_crop_flip",
    crop_fraction=0.875,
    crop_area_min=1.0,
    mean=(0.0,) * 3,
    std=(1 / 255,) * 3,
  )
  (batch,) = take(
    iter(images([{"image": square, "label": 0}] * 8, batch_size=8, options=options)), 1
  )
  for image in batch["images"]:
    assert np.array_equal(image, square) or np.array_equal(image, square[:, ::-1])


def test_randaugment_operations_match_their_definitions():
  """RandAugment's pixel operations against their definitions in numpy (the TPU EfficientNet
  code big_vision runs), at the magnitudes that make them exact."""
  from PIL import Image

  from jtrans.data import randaugment

  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
  pil = Image.fromarray(x)
  op = lambda name, level: np.asarray(randaugment.OPS[name](pil, level, rng)).astype(int)  # noqa: E731
  xi = x.astype(int)
  np.testing.assert_array_equal(op("Invert", 10), 255 - xi)
  np.testing.assert_array_equal(op("Posterize", 10), xi & 0xF0)  # 4 bits kept at magnitude 10.
  np.testing.assert_array_equal(op("Solarize", 5), np.where(xi < 128, xi, 255 - xi))
  np.testing.assert_array_equal(op("Solarize", 10), xi)  # Threshold 256: the TPU code's no-op.
  np.testing.assert_array_equal(
    op("SolarizeAdd", 10), np.where(xi < 128, np.minimum(xi + 110, 255), xi)
  )
  # Brightness 0.1 at magnitude 0 blends with black; 1.9 at 10 extrapolates (PIL rounds).
  np.testing.assert_allclose(op("Brightness", 0), xi * 0.1, atol=1)
  np.testing.assert_allclose(op("Brightness", 10), np.minimum(xi * 1.9, 255), atol=1)
  # TranslateX by 10 pixels at magnitude 1, either way, grey where the image moved away.
  assert (op("TranslateX", 1) == 128).all()  # A 10-wide image moved 10 pixels is all fill.
  shifted = np.asarray(randaugment.OPS["TranslateX"](pil, 0.2, rng)).astype(int)  # 2 pixels.
  assert np.array_equal(shifted[:, :-2], xi[:, 2:]) or np.array_equal(shifted[:, 2:], xi[:, :-2])
  cut = op("Cutout", 0.5)  # Half-side int(0.05 x 40) = 2: a grey square up to 4 x 4.
  changed = np.any(cut != xi, axis=-1)
  assert 0 < changed.sum() <= 16 and (cut[changed] == 128).all()


def test_randaugment_picks_each_operation_uniformly_with_probability_0_2_to_0_8(monkeypatch):
  """Per layer: one of the 16 operations, uniformly, applied with a probability drawn from
  U(0.2, 0.8) (0.5 on average); the draws are the generator's, so a seed repeats them."""
  from jtrans.data import randaugment

  calls = []
  for name in list(randaugment.OPS):
    monkeypatch.setitem(
      randaugment.OPS, name, lambda image, level, rng, name=name: calls.append(name) or image
    )
  image = np.zeros((4, 4, 3), np.uint8)
  rng = np.random.default_rng(0)
  for _ in range(4000):
    randaugment.rand_augment(image, rng, num_layers=2, magnitude=10)
  assert abs(len(calls) / 8000 - 0.5) < 0.02
  counts = np.array([calls.count(name) for name in randaugment.OPS])
  assert len(counts) == 16 and abs(counts / len(calls) - 1 / 16).max() < 0.015
  with pytest.raises(ValueError, match="randaugment_magnitude=11"):
    randaugment.rand_augment(image, rng, magnitude=11)


@pytest.mark.parametrize("start", [1, 3])
def test_mixup_blends_each_batch_with_its_roll_and_resumes(start):
  """big_vision's Mixup: every batch is `r x + (1 - r) roll(x, 1)` of the batch without it, one
  r >= 1/2 per batch from Beta(0.2, 0.2) (mostly near 1), the rolled labels beside it; a restored
  iterator draws the same ratios."""
  plain_options = ImageOptions(size=4, augment="inception_crop_flip")
  options = ImageOptions(size=4, augment="inception_crop_flip", mixup=0.2)
  plain = take(iter(images(options=plain_options)), 40)
  mixed = take(iter(images(options=options)), 40)
  ratios = []
  for p, m in zip(plain, mixed):
    r = m["mix"][0]
    assert (m["mix"] == r).all() and 0.5 <= r <= 1
    np.testing.assert_allclose(
      m["images"], r * p["images"] + (1 - r) * np.roll(p["images"], 1, 0), atol=1e-6
    )
    np.testing.assert_array_equal(m["targets"], p["targets"])
    np.testing.assert_array_equal(m["mixed_targets"], np.roll(p["targets"], 1))
    ratios.append(r)
  # Beta(0.2, 0.2) folded onto [1/2, 1]: P(r > 0.9) = 0.673 (scipy); a new ratio every batch.
  assert abs(np.mean(np.array(ratios) > 0.9) - 0.673) < 0.22 and len(set(ratios)) >= 35
  it = iter(images(options=options))
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))
  fresh = iter(images(options=options))
  fresh.set_state(state)
  assert_same(take(fresh, 3), mixed[start : start + 3])
  assert "mix" not in next(iter(images(options=options, train=False)))  # Evaluation: none.
