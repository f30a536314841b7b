"""Generated-output scores: sacrebleu's BLEU and exact match, and the loop's eval_generate on an
encoder-decoder run, which must agree with --mode=generate decoding the same sources."""

import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from jtrans.decoding import scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCES = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
SYSTEM = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]


def test_bleu_of_references_against_themselves_is_100_and_matches_sacrebleu():
  score, signature = scores.bleu(REFERENCES, REFERENCES)
  assert score == pytest.approx(100.0)
  assert "tok:13a" in signature and "smooth:exp" in signature and "nrefs:1" in signature
  score, _ = scores.bleu(SYSTEM, REFERENCES)
  assert score == pytest.approx(sacrebleu.corpus_bleu(SYSTEM, [REFERENCES]).score)
  assert score == pytest.approx(45.0675, abs=1e-3)  # sacrebleu 2.6 on its README's example.


def test_exact_match_counts_whole_strings():
  assert scores.exact_match(SYSTEM, REFERENCES) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="2 hypotheses for 3 references"):
    scores.exact_match(SYSTEM[:2], REFERENCES)


def test_eval_generate_scores_what_generate_mode_decodes(data_dir, tmp_path):
  """configs/t5.py:tiny for 60 steps with train.eval_generate=16: the eval record holds
  exact_match and BLEU; --mode=eval on the checkpoint gives the same; decoding the same 16
  reverse_strings sources in process scores the same outputs against the split's targets."""
  from jtrans.data import sources

  workdir = str(tmp_path / "run")
  overrides = [
    f"--config.data.data_dir={data_dir}",
    "--config.train.steps=60",
    "--config.train.eval_every=60",
    "--config.train.eval_batches=1",
    "--config.train.eval_generate=16",
    "--config.optim.warmup_steps=20",
  ]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  base = [sys.executable, "run.py", "--config=configs/t5.py:tiny", f"--workdir={workdir}"]
  out = subprocess.run(
    base + overrides, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "16 sources decoded: exact match" in out.stdout and "tok:13a" in out.stdout, out.stdout
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  (final,) = [r for r in records if r["split"] == "eval" and r["step"] == 60]
  assert 0 <= final["exact_match"] <= 1 and 0 <= final["bleu"] <= 100

  split = sources.load_source("reverse_strings", "validation", data_dir)
  pairs = [split[i] for i in range(16)]
  # --mode=eval on the checkpoint scores the same outputs.
  evaluated = subprocess.run(
    base[:3] + ["--mode=eval", f"--workdir={workdir}"] + overrides,
    cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
  assert (again["exact_match"], again["bleu"]) == (final["exact_match"], final["bleu"])
  targets = [p["target"].decode() for p in pairs]

  # The same decoding in process, and the references are the sources' targets in order.
  from configs import t5
  from jtrans import modes, parts

  config = t5.get_config("tiny")
  config.data.data_dir = data_dir
  run = parts.build(config, train_data=False)
  scored = scores.seq2seq_scores(
    run.layout.model,
    modes.restore_params(config, workdir),
    run.eval_data,
    run.tokenizer,
    examples=16,
    max_new_tokens=40,
  )
  assert scored.references == targets
  assert any(scored.hypotheses), scored.hypotheses  # The model emits something by step 60.
  assert scored.scores == {"exact_match": final["exact_match"], "bleu": final["bleu"]}
  # And they are what --mode=generate prints for those sources (its function, in process).
  config.sample.temperature = 0.0
  prompts = [p["source"].decode() for p in pairs]
  assert modes.generate(config, prompts, workdir, None, max_new_tokens=40) == scored.hypotheses
