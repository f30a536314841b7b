"""Tests of the image classification pipeline: values against the records, resumption, shards."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs import lm
from jtrans import train
from jtrans.data import synthetic_images
from jtrans.data.images import make_image_dataset

RNG = np.random.default_rng(0)
RECORDS = [{"image": RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8), "label": i % 7, "id": i}
           for i in range(11)]


def images(records=RECORDS, **kwargs):
  args = dict(source=records, image_key="image", label_key="label", batch_size=4, seed=0,
              train=True)
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
  scaled = [r["image"].astype(np.float32) / 127.5 - 1 for r in RECORDS]
  (i,) = [i for i, s in enumerate(scaled) if np.array_equal(s, image)]
  return i


def test_eval_batches_equal_the_records():
  batches = list(images(train=False))
  assert len(batches) == 3
  for b in batches:
    assert b["images"].shape == (4, 4, 5, 3) and b["images"].dtype == np.float32
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
    assert sorted(order[11 * epoch:11 * epoch + 11]) == list(range(11))
  assert order[:11] != order[11:22]
  again = [record_of(x) for b in take(iter(images(batch_size=11)), 3) for x in b["images"]]
  assert again == order


@pytest.mark.parametrize("start", [1, 2, 3])  # Batch 2 straddles epochs 0 and 1.
def test_resume_after_a_json_round_trip(start):
  reference = take(iter(images()), start + 4)
  it = iter(images())
  take(it, start)
  state = json.loads(json.dumps(it.get_state()))
  take(it, 2)
  fresh = iter(images())
  fresh.set_state(state)
  assert_same(take(fresh, 4), reference[start:])


def test_shards_are_disjoint_and_cover():
  seen = []
  for shard in range(2):
    batches = list(images(train=False, batch_size=2, shard_index=shard, shard_count=2))
    assert len(batches) == 3  # ceil(ceil(11 / 2) / 2) on both shards.
    seen += [record_of(x) for b in batches for x, w in zip(b["images"], b["weights"]) if w]
    own = {record_of(x) for b in take(iter(images(shard_index=shard, shard_count=2)), 4)
           for x in b["images"]}
    assert own == set(range(shard, 11, 2))
  assert sorted(seen) == list(range(11))


def test_make_dataset_dispatches_classification(tmp_path):
  c = lm.get_config("tiny")
  c.loss.objective = "classification"
  c.data.update({"name": "synthetic_images", "data_dir": str(tmp_path)})
  c.train.batch_size = 8 * jax.process_count()
  with pytest.MonkeyPatch.context() as mp:  # A small build; the real one has 11,000 images.
    mp.setattr(synthetic_images.SyntheticImages, "SPLITS", {"train": (40, 1), "validation": (20, 2)})
    batches = list(train.make_dataset(c, train=False))
  assert len(batches) == 3 and batches[0]["images"].shape == (8, 32, 32, 3)
  labels = np.concatenate([b["targets"] for b in batches])[:20]
  want = np.random.default_rng([2, 0]).permutation(np.arange(20) % 10)  # The builder's labels.
  np.testing.assert_array_equal(labels, want)
  pixels = np.concatenate([b["images"] for b in batches])[:20]
  np.testing.assert_allclose(pixels, synthetic_images.draw(want, 2) / 127.5 - 1, atol=1e-6)
