"""Tests of the sources: local text/JSONL files and the project's TFDS builders (built in tmp dirs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from jtrans.data import files, shakespeare, sources, synthetic_images, synthetic_tasks
from jtrans.data.pipeline import make_lm_dataset

DOCS = [
  "First document.\nTwo lines\n",
  "Grüße, ναί, 日本語 🙂\r\n\ttabs  and  spaces ",
  "",
  '{"not": "json"}',
  "x" * 300,
  "last\n\n\n",
]


def data_config(**kwargs) -> ml_collections.ConfigDict:
  d = base.get_config().data
  d.update(kwargs)
  return d


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("text")
  for i, doc in enumerate(DOCS):
    (root / ("sub" if i % 2 else ".")).mkdir(exist_ok=True)
    (root / ("sub" if i % 2 else ".") / f"doc{i:02d}.txt").write_bytes(doc.encode())
  return str(root)


def write_jsonl(path, records: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=bool(r["id"] % 2)) + "\n\n")  # Blank lines are skipped.


def test_text_files_read_back_exactly(text_files):
  source = sources.from_config(
    data_config(name="files", train_files=f"{text_files}/**/*.txt"), train=True
  )
  by_name = sorted(range(len(DOCS)), key=lambda i: ("sub/" if i % 2 else "") + f"doc{i:02d}")
  assert [source[i]["text"] for i in range(len(source))] == [DOCS[i] for i in by_name]
  two = files.load_files(f"{text_files}/doc00.txt, {text_files}/sub/doc01.txt", "text", "body", "x")
  assert [r["body"] for r in two] == DOCS[:2]


def test_jsonl_reads_back_records_and_feeds_an_lm_epoch(tmp_path):
  records = [{"text": d, "id": i} for i, d in enumerate(DOCS)]
  write_jsonl(tmp_path / "b.jsonl", records[3:])
  write_jsonl(tmp_path / "a.jsonl", records[:3])
  d = data_config(name="files", eval_files=str(tmp_path / "*.jsonl"), file_format="jsonl")
  source = sources.from_config(d, train=False)
  assert [source[i] for i in range(len(source))] == records  # a.jsonl first, lines in order.
  want = np.concatenate([np.append(np.frombuffer(t.encode(), np.uint8) + 3, 1) for t in DOCS])
  for shards in (1, 2):  # Every token once, no more, over an epoch of all shards.
    got = []
    for shard in range(shards):
      batches = list(
        make_lm_dataset(
          source=source,
          tokenizer="byte",
          text_key="text",
          seq_len=16,
          batch_size=3,
          seed=0,
          train=False,
          shard_index=shard,
          shard_count=shards,
        )
      )
      got.append(np.concatenate([b["targets"][b["weights"] > 0] for b in batches]))
    if shards == 1:
      np.testing.assert_array_equal(got[0], want)
    assert sorted(np.concatenate(got).tolist()) == sorted(want.tolist())


def test_file_errors_name_the_setting(tmp_path):
  with pytest.raises(
    FileNotFoundError, match=r"config\.data\.train_files='/nope/\*\.txt'.*'/nope/\*\.txt'"
  ):
    sources.from_config(data_config(name="files", train_files="/nope/*.txt"), train=True)
  with pytest.raises(ValueError, match=r"config\.data\.eval_files is empty"):
    sources.from_config(data_config(name="files"), train=False)
  (tmp_path / "blank").mkdir()
  for name in ("a.txt", "b.txt"):
    (tmp_path / "blank" / name).write_text(" \n\n" if name == "a.txt" else "")
  with pytest.raises(
    ValueError, match=r"config\.data\.train_files=.*2 file\(s\), but none holds any text"
  ):
    sources.from_config(
      data_config(name="files", train_files=str(tmp_path / "blank" / "*.txt")), train=True
    )
  (tmp_path / "x.jsonl").write_text('{"body": "hi"}\n')
  source = files.load_files(str(tmp_path / "x.jsonl"), "jsonl", "text", "train_files")
  with pytest.raises(KeyError, match=r"'text' \(config\.data\.text_key\).*\['body'\]"):
    next(
      iter(
        make_lm_dataset(
          source=source,
          tokenizer="byte",
          text_key="text",
          seq_len=8,
          batch_size=1,
          seed=0,
          train=False,
        )
      )
    )
  with pytest.raises(ValueError, match=r"config\.data\.file_format='csv'"):
    files.load_files(str(tmp_path / "x.jsonl"), "csv", "text", "train_files")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
  """A data_dir with the synthetic builders prepared through load_source (images made small)."""
  path = str(tmp_path_factory.mktemp("builders"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(
      synthetic_images.SyntheticImages, "SPLITS", {"train": (60, 1), "validation": (30, 2)}
    )
    for name in (
      "modular_arithmetic",
      "modular_arithmetic/div97",
      "modular_arithmetic/add113_30",
      "copy_strings",
      "reverse_strings",
      "synthetic_images",
    ):
      sources.load_source(name, "train", path)
  return path


def read(name: str, split: str, data_dir: str) -> list[dict]:
  source = tfds.data_source(
    name,
    split=split,
    data_dir=data_dir,
    download=False,
    builder_kwargs={"file_format": "array_record"},
  )
  return [source[i] for i in range(len(source))]


@pytest.mark.parametrize(
  "config,symbol,p,fraction",
  [("add97", "+", 97, 0.5), ("div97", "/", 97, 0.5), ("add113_30", " ", 113, 0.3)],
)
def test_modular_arithmetic_has_every_pair_once_and_right_answers(
  built, config, symbol, p, fraction
):
  name = "modular_arithmetic" + ("" if config == "add97" else f"/{config}")
  seen = {}
  for split in ("train", "validation"):
    for r in read(name, split, built):
      a, b = map(int, r["source"].decode()[:-1].split(symbol))  # add113_30: "a b=".
      want = a * pow(b, -1, p) % p if symbol == "/" else (a + b) % p
      assert r["source"].decode() == f"{a}{symbol}{b}=" and int(r["target"]) == want
      assert r["text"] == r["source"] + r["target"] and r["index"] == a * p + b
      assert (a, b) not in seen
      seen[(a, b)] = split
  pairs = p * (p - 1) if symbol == "/" else p * p
  assert len(seen) == pairs and all(a < p and 0 <= b < p for a, b in seen)
  n_train = sum(s == "train" for s in seen.values())
  assert n_train == round(pairs * fraction)  # add113_30: 3831 of 12769, Nanda et al.'s 30%.
  assert {q for q, s in seen.items() if s == "train"} == synthetic_tasks.modular_split(
    config[:3], p, fraction, 0
  )  # The fixed seeded split.
  assert "tensorflow" not in sys.modules


def test_copy_and_reverse_targets(built):
  sizes = {}
  for name, fn in (("copy_strings", lambda s: s), ("reverse_strings", lambda s: s[::-1])):
    for split in ("train", "validation"):
      records = read(name, split, built)
      sizes[split] = len(records)
      lengths = set()
      for r in records:
        s = r["source"].decode()
        assert s.isalpha() and s.islower() and 1 <= len(s) <= 32
        assert r["target"].decode() == fn(s) and r["text"].decode() == f"{s}={fn(s)}"
        lengths.add(len(s))
      assert len(lengths) == 32  # Varied lengths.
  assert sizes == {"train": 5000, "validation": 500}
  ordered = sources.load_source("copy_strings", "validation", built)  # Sorted by index.
  assert [ordered[i]["source"].decode() for i in range(3)] == synthetic_tasks.random_strings(
    500, 2
  )[:3]


def test_synthetic_images_shapes_labels_and_seeding(built):
  for split, n in (("train", 60), ("validation", 30)):
    source = sources.load_source("synthetic_images", split, built)
    images = np.stack([source[i]["image"] for i in range(n)])
    labels = np.array([source[i]["label"] for i in range(n)])
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert labels.min() >= 0 and labels.max() < 10 and len(set(labels)) == 10
    np.testing.assert_array_equal(
      images, synthetic_images.draw(labels, 1 if split == "train" else 2)
    )
  # The class shows in the stripes: the dominant spatial frequency differs by class.
  labels = np.arange(200) % 10
  spectra = np.abs(np.fft.fft2(synthetic_images.draw(labels, 0).mean(-1) - 128.0))
  peaks = spectra.reshape(200, -1).argmax(1)
  for c in range(10):
    same = peaks[labels == c]
    assert np.mean(same == np.bincount(same).argmax()) > 0.5, c


def test_tiny_shakespeare_splits_like_tfds_and_concatenate_back(tmp_path):
  text = "".join(f"ROMEO{i}: O, wherefore — «ça» 🙂\nart thou\r\n" for i in range(300))
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "input.txt").write_bytes(text.encode())
  data_dir = str(tmp_path / "tfds")
  d = data_config(name="tiny_shakespeare_file", data_dir=data_dir, manual_dir=str(manual))
  got = {}
  for split in ("train", "validation", "test"):
    d.eval_split = split
    source = sources.from_config(d, train=False)
    assert len(source) == 1
    got[split] = source[0]["text"].decode()
  i = int(len(text) * 0.9)  # TFDS's tiny_shakespeare: 90% train, then half of the rest.
  j = i + int((len(text) - i) * 0.5)
  assert got == {"train": text[:i], "validation": text[i:j], "test": text[j:]}
  assert "".join(got.values()) == text


def test_missing_input_txt_names_the_path_and_the_url(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    sources.load_source(
      "tiny_shakespeare_file", "train", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "empty")
    )
  message = str(e.value)
  assert str(tmp_path / "empty" / "input.txt") in message and shakespeare.URL in message
  assert "config.data.manual_dir" in message


def test_unknown_name_lists_the_project_builders(tmp_path):
  with pytest.raises(ValueError, match=r"config\.data\.name.*modular_arithmetic.*'files'"):
    sources.load_source("no_such_data_set", "train", str(tmp_path))


PREPARE_AT_ONCE = """
import os, sys, time
from jtrans.data import sources
data_dir, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.01)
print(len(sources.load_source("reverse_strings", "train", data_dir)))
"""


def test_two_runs_preparing_one_data_set_at_once_both_get_it(tmp_path):
  """Two processes that prepare reverse_strings into the same fresh data_dir at the same moment
  (as two runs launched together do) both read its 5,000 records: one prepares it, the other
  waits and reads it. Without the lock the second fails renaming TFDS's incomplete folder."""
  data_dir, go = str(tmp_path / "tfds"), str(tmp_path / "go")
  ready = [str(tmp_path / f"ready{i}") for i in range(2)]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  runs = [
    subprocess.Popen(
      [sys.executable, "-c", PREPARE_AT_ONCE, data_dir, flag, go],
      cwd=root,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for flag in ready
  ]
  deadline = time.time() + 120
  while not all(os.path.exists(flag) for flag in ready) and time.time() < deadline:
    time.sleep(0.05)  # Both have imported TFDS; release them together.
  open(go, "w").close()
  for run in runs:
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == "5000"
