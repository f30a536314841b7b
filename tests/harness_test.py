"""The lm-evaluation-harness adapter (jtrans/evaluation/harness.py): its log-likelihoods equal a
direct forward pass of the model, and on an imported GPT-2 directory lm_eval's results with
`--model jtrans` equal those of lm_eval's own `--model hf` on the same local tasks (shipped in
tests/harness_tasks, read offline)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> str:
  """A GPT-2 directory as transformers writes it: a byte-level BPE trained here, and a small
  random model far from uniform predictions (init std 0.3)."""
  from pydoc_data.topics import topics

  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

  path = tmp_path_factory.mktemp("gpt2")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<|endoftext|>"],
    show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator([topics[k] for k in sorted(topics)[:20]], trainer)
  tok.save(str(path / "tokenizer.json"))
  fast = GPT2TokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
  fast.eos_token = fast.bos_token = fast.unk_token = "<|endoftext|>"
  fast.save_pretrained(path)
  import torch

  torch.manual_seed(0)
  config = GPT2Config(
    vocab_size=len(fast), n_positions=128, n_embd=32, n_layer=2, n_head=2, initializer_range=0.3,
    bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
  )  # fmt: skip
  GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
  return str(path)


class Request:  # What lm_eval hands a model: an object with `.args`.
  def __init__(self, *args):
    self.args = args


PAIRS = [
  ("The capital of France is", " Paris"),
  ("def square(x):\n    return x", " ** 2"),
  ("Trailing space ", "moves to the continuation"),
  ("", "Begins with nothing."),
  ("x" * 300, " a context longer than max_length"),  # Keeps the last max_length tokens.
]


def test_loglikelihoods_equal_the_models_forward_passes(tiny_config, tmp_path):
  """`--model_args workdir=<run>`: the run's config.json, tokenizer (bytes) and latest
  checkpoint. Each continuation's summed log-probability and greedy flag equal the model's own
  logits on context + continuation, one request at a time in float64 (an empty context is
  conditioned on EOS, as lm_eval does; a long one keeps its last max_length tokens), and a
  rolling log-likelihood is the text's tokens' sum after EOS. (The Hugging Face directory path
  is checked against lm_eval's own `--model hf` below.)"""
  import jax

  from jtrans import modes
  from jtrans.evaluation import harness

  tiny_config.train.steps = 2
  modes.train(tiny_config, str(tmp_path))
  adapter = harness.JtransLM(workdir=str(tmp_path), batch_size=8)
  assert adapter.max_length == tiny_config.model.max_len == 32
  check_against_forward_passes(adapter, PAIRS)
  model, params, tok = adapter.layout.model, adapter.params, adapter.tok
  # A text longer than max_length: the sum over lm_eval's own disjoint windows, each scored
  # here by a forward pass of its own.
  from lm_eval import utils as lm_eval_utils

  text = "The quick brown fox jumps over the lazy dog."
  assert len(tok.encode(text)) > adapter.max_length
  rolling = adapter.loglikelihood_rolling([Request(text)])[0]

  pairs = [
    lm_eval_utils.make_disjoint_window(w)
    for w in lm_eval_utils.get_rolling_token_windows(
      token_list=list(tok.encode(text)), prefix_token=tok.eos_id, max_seq_len=32, context_len=1
    )
  ]
  total = 0.0
  for context, continuation in pairs:
    whole = (context + continuation)[-33:]
    logits = np.asarray(jax.device_get(model.apply({"params": params}, np.array([whole[:-1]]))))
    logits = logits[0].astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    logp = logits[np.arange(len(whole) - 1), whole[1:]] - logz
    total += logp[len(whole) - 1 - len(continuation) :].sum()
  assert rolling == pytest.approx(total, abs=1e-4)


def check_against_forward_passes(adapter, pairs) -> None:
  import jax

  got = adapter.loglikelihood([Request(c, x) for c, x in pairs])
  model, params, tok = adapter.layout.model, adapter.params, adapter.tok
  for (context, continuation), (logprob, greedy) in zip(pairs, got):
    if context:
      moved = len(context) - len(context.rstrip())
      context, continuation = (
        context[: len(context) - moved],
        context[len(context) - moved :] + continuation,
      )
      whole = list(tok.encode(context + continuation))
      n_cont = len(whole) - len(tok.encode(context))
    else:
      whole = [tok.eos_id] + list(tok.encode(continuation))
      n_cont = len(whole) - 1
    whole = whole[-(adapter.max_length + 1) :]
    logits = np.asarray(jax.device_get(model.apply({"params": params}, np.array([whole[:-1]]))))[0]
    logits = logits.astype(np.float64)
    logp = (
      logits
      - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
      - logits.max(-1, keepdims=True)
    )
    targets = np.array(whole[1:])
    span = slice(len(targets) - n_cont, len(targets))
    expected = logp[np.arange(len(targets)), targets][span].sum()
    assert logprob == pytest.approx(expected, abs=1e-5), (context, continuation)
    assert greedy == bool((logits.argmax(-1) == targets)[span].all())


def _samples(output_dir) -> dict[str, list]:
  """{task: [each document's per-choice (log-likelihood or text) responses]} from lm_eval's
  --output_path with --log_samples."""
  found = {}
  for root, _, files in os.walk(output_dir):
    for name in files:
      if name.startswith("samples_") and name.endswith(".jsonl"):
        task = name[len("samples_") :].rsplit("_", 1)[0]
        rows = [json.loads(line) for line in open(os.path.join(root, name))]
        found[task] = [row["filtered_resps"] for row in sorted(rows, key=lambda r: r["doc_id"])]
  return found


def readme_command(gpt2_dir: str) -> list[str]:
  """The README's harness command, on the test's GPT-2 directory."""
  text = open(os.path.join(ROOT, "README.md")).read().replace("\\\n", " ")
  line = re.search(r"python -m jtrans\.evaluation\.harness[^\n]*", text).group(0)
  return [
    sys.executable,
    *shlex.split(line.replace("hf_dir=/models/gpt2", f"hf_dir={gpt2_dir}"))[1:],
  ]


def _lm_eval(command: list[str], output: str) -> dict[str, list]:
  env = {**os.environ, **OFFLINE, "JAX_PLATFORMS": "cpu"}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  out = subprocess.run(
    [*command, "--output_path", output, "--log_samples", "--batch_size", "4"], cwd=ROOT, env=env,
    capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-4000:]
  return _samples(output)


def test_lm_eval_command_with_jtrans_equals_lm_eval_with_hugging_face(gpt2_dir, tmp_path):
  """The README's `python -m jtrans.evaluation.harness --model jtrans --model_args hf_dir=...`
  against `lm_eval --model hf --model_args pretrained=...` on the three local tasks: every
  choice's log-likelihood within 1e-4, every rolling log-likelihood within 1e-4, the same greedy
  generations."""
  command = readme_command(gpt2_dir)
  ours = _lm_eval(command, str(tmp_path / "jtrans"))
  tasks = command[command.index("--tasks") :]
  theirs = _lm_eval(
    [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
     f"pretrained={gpt2_dir},dtype=float32", "--device", "cpu", *tasks],
    str(tmp_path / "hf"),
  )  # fmt: skip
  assert set(ours) == set(theirs) == {"jtrans_tiny_mc", "jtrans_tiny_text", "jtrans_tiny_gen"}
  for task in ("jtrans_tiny_mc", "jtrans_tiny_text"):
    assert len(ours[task]) == len(theirs[task])
    for a, b in zip(ours[task], theirs[task]):
      a = np.array([x[0] if isinstance(x, list) else x for x in a], np.float64).ravel()
      b = np.array([x[0] if isinstance(x, list) else x for x in b], np.float64).ravel()
      np.testing.assert_allclose(a, b, atol=1e-4, err_msg=task)
  assert ours["jtrans_tiny_gen"] == theirs["jtrans_tiny_gen"]
